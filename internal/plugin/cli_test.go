package plugin

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// TestForEachFailsClosed: every environment is attempted, every failure is
// reported, and the command fails if any did.
func TestForEachFailsClosed(t *testing.T) {
	tests := []struct {
		name       string
		names      []string
		fail       map[string]bool
		wantErr    string
		wantStderr []string
	}{
		{name: "all succeed", names: []string{"a", "b"}},
		{name: "one of three fails", names: []string{"a", "b", "c"}, fail: map[string]bool{"b": true},
			wantErr: "fence failed for 1 of 3 environments: b", wantStderr: []string{"Error: fence b: denied b"}},
		{name: "two fail", names: []string{"a", "b", "c"}, fail: map[string]bool{"a": true, "c": true},
			wantErr: "fence failed for 2 of 3 environments: a, c", wantStderr: []string{"fence a: denied a", "fence c: denied c"}},
		{name: "a single environment's error is returned as is", names: []string{"a"}, fail: map[string]bool{"a": true}, wantErr: "denied a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			o := &options{streams: genericiooptions.IOStreams{Out: &bytes.Buffer{}, ErrOut: &stderr}}
			var mu sync.Mutex
			var tried []string
			err := o.forEach(context.Background(), tt.names, 2, func(_ context.Context, n string) error {
				mu.Lock()
				tried = append(tried, n)
				mu.Unlock()
				if tt.fail[n] {
					return errors.New("denied " + n)
				}
				return nil
			})
			sort.Strings(tried)
			if strings.Join(tried, ",") != strings.Join(tt.names, ",") {
				t.Errorf("attempted %v, want every one of %v", tried, tt.names)
			}
			if (err == nil) != (tt.wantErr == "") || (err != nil && err.Error() != tt.wantErr) {
				t.Errorf("error = %v, want %q", err, tt.wantErr)
			}
			for _, s := range tt.wantStderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr.String())
				}
			}
		})
	}
}
