// Package flagvalue has the kingpin values of the exporter's flags whose
// parse errors name the flag and say what was expected: kingpin's own do
// neither (`strconv.ParseFloat: parsing "ten": invalid syntax`).
package flagvalue

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Value is a kingpin.Value that parses into *p with parse; its errors read
// "--name=text: what parse says".
type Value[T any] struct {
	name  string
	p     *T
	parse func(string) (T, error)
}

// New returns the Value of flag name (without "--"), stored in *p.
func New[T any](name string, p *T, parse func(string) (T, error)) *Value[T] {
	return &Value[T]{name: name, p: p, parse: parse}
}

// Set parses s into the value; a parse error names the flag.
func (v *Value[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return fmt.Errorf("--%s=%s: %w", v.name, s, err)
	}
	*v.p = x
	return nil
}

func (v *Value[T]) String() string { return fmt.Sprint(*v.p) }

// ParseInt parses a decimal int.
func ParseInt(s string) (int, error) {
	n, err := strconv.ParseInt(s, 10, strconv.IntSize)
	if err != nil {
		return 0, errors.New("not an integer")
	}
	return int(n), nil
}

// ParseUint32 parses a decimal uint32.
func ParseUint32(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, errors.New("not an integer from 0 to 4294967295")
	}
	return uint32(n), nil
}

// ParseDuration parses a time.Duration (time.ParseDuration).
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("not a duration (such as 500ms, 30s, 2m, 1h)")
	}
	return d, nil
}
