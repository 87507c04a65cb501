// Package charttest reads the Helm chart's values.yaml the way its
// documentation is written, for the values table in the chart's README
// (hack/chart-docs) and for the chart's tests (make test-chart), which live
// here too so that they need nothing but Go and bin/helm.
//
// A value is documented by a comment above its key that starts with "# --",
// as helm-docs reads them; the comment may go on over further "#" lines.
// A documented map is one row: its children need no comment of their own.
package charttest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// Value is one row of the values table.
type Value struct {
	// Path is the value's dotted path, e.g. metrics.service.port.
	Path string
	// Default is the default as compact JSON.
	Default string
	// Description is the text of the value's "# --" comment.
	Description string
}

// Values is what values.yaml holds: its documented values, in file order,
// and the paths of its leaves (scalars, lists and empty maps).
type Values struct {
	Documented []Value
	Leaves     []string
}

// ParseValues reads values.yaml.
func ParseValues(b []byte) (Values, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return Values{}, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return Values{}, errors.New("values.yaml is not a map")
	}
	var v Values
	if err := v.walk(doc.Content[0], ""); err != nil {
		return Values{}, err
	}
	return v, nil
}

func (v *Values) walk(m *yaml.Node, prefix string) error {
	for i := 0; i+1 < len(m.Content); i += 2 {
		key, val := m.Content[i], m.Content[i+1]
		path := key.Value
		if prefix != "" {
			path = prefix + "." + key.Value
		}
		if desc, ok := description(key.HeadComment); ok {
			def, err := compactJSON(val)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			v.Documented = append(v.Documented, Value{Path: path, Default: def, Description: desc})
		}
		if val.Kind == yaml.MappingNode && len(val.Content) > 0 {
			if err := v.walk(val, path); err != nil {
				return err
			}
			continue
		}
		v.Leaves = append(v.Leaves, path)
	}
	return nil
}

// Undocumented returns the leaves that neither have a "# --" comment nor
// sit below a value that has one.
func (v Values) Undocumented() []string {
	documented := map[string]bool{}
	for _, d := range v.Documented {
		documented[d.Path] = true
	}
	var out []string
	for _, leaf := range v.Leaves {
		found := false
		for p := leaf; p != ""; p = parent(p) {
			if documented[p] {
				found = true
				break
			}
		}
		if !found {
			out = append(out, leaf)
		}
	}
	return out
}

func parent(path string) string {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// description returns the "# --" part of a head comment: its first line
// after the marker and the comment lines that follow it.
func description(comment string) (string, bool) {
	lines := strings.Split(comment, "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "# --") {
			start = i
		}
	}
	if start < 0 {
		return "", false
	}
	var words []string
	for i, l := range lines[start:] {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "#") {
			break
		}
		if i == 0 {
			l = strings.TrimPrefix(l, "# --")
		} else {
			l = strings.TrimPrefix(l, "#")
		}
		if l = strings.TrimSpace(l); l != "" {
			words = append(words, l)
		}
	}
	return strings.Join(words, " "), true
}

func compactJSON(n *yaml.Node) (string, error) {
	var x any
	if err := n.Decode(&x); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		return "", err
	}
	return strings.TrimSpace(buf.String()), nil
}

// Table is the values table in Markdown.
func Table(values []Value) string {
	var b strings.Builder
	b.WriteString("| value | default | description |\n|---|---|---|\n")
	esc := strings.NewReplacer("|", `\|`)
	for _, v := range values {
		fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", v.Path, esc.Replace(v.Default), esc.Replace(v.Description))
	}
	return b.String()
}

// The README's generated part sits between these lines.
const (
	BeginMarker = "<!-- values:begin (make chart-docs writes this table from values.yaml; do not edit it here) -->"
	EndMarker   = "<!-- values:end -->"
)

// WithTable returns readme with the part between the markers replaced by
// table.
func WithTable(readme, table string) (string, error) {
	begin := strings.Index(readme, BeginMarker)
	end := strings.Index(readme, EndMarker)
	if begin < 0 || end < begin {
		return "", fmt.Errorf("the README has no %q ... %q section", BeginMarker, EndMarker)
	}
	return readme[:begin+len(BeginMarker)] + "\n" + table + readme[end:], nil
}
