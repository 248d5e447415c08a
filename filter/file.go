package filter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The --config.file: a YAML mapping with these keys, all optional.
//
//	excluded_source_connections:       # map[string][]string (see doc.go)
//	  "10.0.0.2": ["tcp 53361-53500", "udp 119"]
//	excluded_destination_connections:
//	  "*": ["9000"]
//	included_source_connections: {}    # same format; "*" with "*" allowed
//	included_destination_connections: {}
//	address_groups:                    # CIDRs: a remote address inside one is
//	  - 10.0.0.0/8                     # labelled with the CIDR (the most
//	  - 10.1.0.0/16                    # specific group wins)
//	cgroups:                           # cgroup subtrees (see cgroups.go)
//	  exclude: [/system.slice/backup.service]
//
// Any other key is an error. Every error names the file, the key and the
// entry (and the line where the YAML gives one), as in
//
//	config.yml: excluded_destination_connections["10.0.0.0/33"]: invalid CIDR: prefix length out of range (line 3)
//
// and all errors are reported at once.

const (
	// maxConfigFileBytes bounds the size of the config file.
	maxConfigFileBytes = 16 << 20
	// maxAddressGroups bounds the address_groups list.
	maxAddressGroups = 10000

	keyAddressGroups = "address_groups"
)

var configFileKeys = []string{
	listExcludedSource, listExcludedDestination,
	listIncludedSource, listIncludedDestination,
	keyAddressGroups, keyCgroups,
}

// FileConfig is the parsed --config.file.
type FileConfig struct {
	// Filters is nil when the file has no filter (everything is traced).
	Filters *ConnectionFilters
	// AddressGroups are the address groups, normalised (IPv4-mapped
	// prefixes unmapped), in file order. Do not modify them after parsing:
	// Group uses an index built from them.
	AddressGroups []netip.Prefix
	// Cgroups is the cgroup filter, nil when the file has none.
	Cgroups *CgroupFilter

	groups *groupIndex
}

// LoadConfigFile reads and parses the config file at path; errors name path.
func LoadConfigFile(path string) (*FileConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	if len(data) > maxConfigFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxConfigFileBytes)
	}
	return ParseConfigFile(data, path)
}

// ParseConfigFile parses a config file's contents; name (the file name) starts
// every error. An empty file is a valid config that traces everything.
func ParseConfigFile(data []byte, name string) (*FileConfig, error) {
	p := &configParser{name: name}
	fc := p.parse(data)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return fc, nil
}

type configParser struct {
	name string
	errs []error
}

func (p *configParser) errorf(format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: "+format, append([]any{p.name}, args...)...))
}

// resolve follows aliases (bounded: an alias may point to an alias).
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// oneLine keeps an error on one line (each error line starts with the file
// name).
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", `\n`)
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func describe(n *yaml.Node) string {
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		tag := n.ShortTag()
		switch {
		case tag == "!!str":
			return fmt.Sprintf("a string %q", n.Value)
		case strings.HasPrefix(tag, "!!") && strings.Trim(tag[2:], "abcdefghijklmnopqrstuvwxyz") == "":
			return fmt.Sprintf("%s %q", tag[2:], n.Value)
		}
		return fmt.Sprintf("a value tagged %q: %q", tag, n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

func (p *configParser) parse(data []byte) *FileConfig {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return &FileConfig{}
		}
		p.errorf("%s", oneLine(err))
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		if err != nil {
			p.errorf("%s", oneLine(err))
		} else {
			p.errorf("line %d: a second YAML document: the file must hold one", extra.Line)
		}
		return nil
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return &FileConfig{}
		}
		root = root.Content[0]
	}
	root = resolve(root)
	if isNull(root) {
		return &FileConfig{}
	}
	if root.Kind != yaml.MappingNode {
		p.errorf("line %d: want a mapping with keys %s, got %s", root.Line, strings.Join(configFileKeys, ", "), describe(root))
		return nil
	}
	lists := map[string]map[string][]string{}
	lines := map[string]map[string]int{}
	var groupsNode, cgroupsNode *yaml.Node
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := resolve(root.Content[i]), resolve(root.Content[i+1])
		if k == nil || k.Kind != yaml.ScalarNode {
			p.errorf("line %d: want a key (%s), got %s", root.Content[i].Line, strings.Join(configFileKeys, ", "), describe(k))
			continue
		}
		if !slices.Contains(configFileKeys, k.Value) {
			p.errorf("line %d: unknown key %q (known keys: %s)", k.Line, k.Value, strings.Join(configFileKeys, ", "))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errorf("%s: line %d: key repeated (first at line %d)", k.Value, k.Line, first)
			continue
		}
		seen[k.Value] = k.Line
		switch k.Value {
		case keyAddressGroups:
			groupsNode = v
			continue
		case keyCgroups:
			cgroupsNode = v
			continue
		}
		lists[k.Value], lines[k.Value] = p.filterMap(k.Value, v)
	}
	groups := p.addressGroups(groupsNode)
	cgroups := p.cgroupFilter(cgroupsNode)
	// Parse the filters even after a structural error (an entry of the
	// wrong type, left out of its list), so that every bad entry is reported.
	filters, ferrs := newConnectionFilters(lists[listExcludedSource], lists[listExcludedDestination],
		lists[listIncludedSource], lists[listIncludedDestination])
	for _, err := range ferrs {
		var fe *filterError
		if errors.As(err, &fe) {
			if line, ok := lines[fe.List][fe.Key]; ok {
				p.errorf("%v (line %d)", fe, line)
				continue
			}
		}
		p.errorf("%v", err)
	}
	if len(p.errs) > 0 {
		return nil
	}
	fc := &FileConfig{Filters: filters, AddressGroups: groups, Cgroups: cgroups}
	if len(groups) > 0 {
		fc.groups = newGroupIndex(groups)
	}
	return fc
}

// filterMap decodes one filter list: a mapping from address to a list of
// port specs. lines holds each key's line.
func (p *configParser) filterMap(list string, n *yaml.Node) (m map[string][]string, lines map[string]int) {
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(`%s: line %d: want a mapping from address to a list of port specs (e.g. "10.0.0.1": ["tcp 80"]), got %s`, list, n.Line, describe(n))
		return nil, nil
	}
	m = make(map[string][]string, len(n.Content)/2)
	lines = make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k == nil || k.Kind != yaml.ScalarNode {
			p.errorf("%s: line %d: want an address as key, got %s", list, n.Content[i].Line, describe(k))
			continue
		}
		key := k.Value
		if first, dup := lines[key]; dup {
			p.errorf("%s[%q]: line %d: key repeated (first at line %d)", list, key, k.Line, first)
			continue
		}
		lines[key] = k.Line
		switch {
		case isNull(v):
			m[key] = nil // reported as an empty port list
		case v.Kind == yaml.SequenceNode:
			specs := make([]string, 0, len(v.Content))
			ok := true
			for _, s := range v.Content {
				s = resolve(s)
				if s == nil || s.Kind != yaml.ScalarNode {
					p.errorf("%s[%q]: line %d: want a port spec, got %s", list, key, v.Line, describe(s))
					ok = false
					continue
				}
				specs = append(specs, s.Value)
			}
			if ok {
				m[key] = specs
			}
		default:
			p.errorf(`%s[%q]: line %d: want a list of port specs (e.g. ["80"]), got %s`, list, key, v.Line, describe(v))
		}
	}
	return m, lines
}
