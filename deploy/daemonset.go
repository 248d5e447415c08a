// Package deploy holds the Kubernetes and Prometheus files of the
// exporter. They cannot be applied here (no cluster, no Docker engine): its
// tests check them with what runs here, and the e2e tests run the exporter
// with the DaemonSet's capabilities.
package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"

	"go.yaml.in/yaml/v3"
)

// DaemonSet is the part of daemonset.yaml these checks read.
type DaemonSet struct {
	Kind string
	Spec struct {
		Template struct {
			Spec struct {
				HostNetwork bool `yaml:"hostNetwork"`
				HostPID     bool `yaml:"hostPID"`
				Containers  []struct {
					Image string
					Args  []string
					Ports []struct {
						ContainerPort int `yaml:"containerPort"`
					}
					SecurityContext struct {
						Privileged               *bool `yaml:"privileged"`
						AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
						Capabilities             struct{ Add, Drop []string }
					} `yaml:"securityContext"`
					VolumeMounts []struct {
						Name      string
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				}
				Volumes []Volume
			}
		}
	}
}

// Volume is a volume of the DaemonSet's pod.
type Volume struct {
	Name     string
	HostPath struct{ Path string } `yaml:"hostPath"`
	Secret   struct {
		SecretName string `yaml:"secretName"`
	}
}

// ReadDaemonSet returns the DaemonSet of daemonset.yaml; the e2e test runs
// the exporter with its capabilities.
func ReadDaemonSet(path string) (*DaemonSet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var ds DaemonSet
		if err := dec.Decode(&ds); err != nil {
			return nil, err
		}
		if ds.Kind == "DaemonSet" {
			return &ds, nil
		}
	}
}

// DaemonSetFile is the path of daemonset.yaml.
func DaemonSetFile() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "daemonset.yaml")
}
