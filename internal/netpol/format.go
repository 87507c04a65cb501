package netpol

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable writes the breaching flows of r as an aligned table with the
// columns DIRECTION, POD, PEER, PORT and POLICIES, or one line saying there
// are none.
func WriteTable(w io.Writer, r Result) error {
	if len(r.Flows) == 0 {
		_, err := fmt.Fprintln(w, "No NetworkPolicy allows a flow into or out of a fenced pod.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DIRECTION\tPOD\tPEER\tPORT\tPOLICIES")
	for _, f := range r.Flows {
		policies := strings.Join(f.Policies, ",")
		if policies == "" {
			policies = "<none: pod not selected>"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Direction, f.Pod, f.Peer, f.Port, policies)
	}
	return tw.Flush()
}

// Format returns WriteTable's output as a string.
func Format(r Result) string {
	var b strings.Builder
	_ = WriteTable(&b, r) // a strings.Builder does not fail
	return b.String()
}
