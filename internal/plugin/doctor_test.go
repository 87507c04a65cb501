package plugin

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/careplane/careplane/internal/preflight"
)

// TestDoctorColour: on a terminal the status words are coloured, and the
// lines stay aligned; without colour they are plain.
func TestDoctorColour(t *testing.T) {
	r := preflight.Report{Namespace: "ns", Name: "careplane", Results: []preflight.Result{
		{Check: "crds", Status: preflight.Pass, Message: "ok"},
		{Check: "network-policy", Status: preflight.Warn, Message: "unknown"},
		{Check: "leader", Status: preflight.Fail, Message: "no leader"},
	}}
	for _, on := range []bool{true, false} {
		var out bytes.Buffer
		o := &options{streams: genericiooptions.IOStreams{Out: &out}, colour: palette{on: on}}
		if err := o.writeReport(r, ""); err != nil {
			t.Fatal(err)
		}
		want := "PASS  crds            ok"
		if on {
			want = "\x1b[32mPASS\x1b[0m  crds            ok"
		}
		if !strings.Contains(out.String(), want) || strings.Contains(out.String(), "\x1b[") != on {
			t.Errorf("colour %v: got %q, want it to contain %q", on, out.String(), want)
		}
		if on && !strings.Contains(out.String(), "\x1b[31mFAIL\x1b[0m  leader") {
			t.Errorf("colour on: FAIL not red: %q", out.String())
		}
	}
}
