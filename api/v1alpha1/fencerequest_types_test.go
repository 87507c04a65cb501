package v1alpha1

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestHoldingRequest: the request holding an environment's fence is one
// whose status.holding names it (a request being deleted still holds), the
// oldest when several do, by name at the same second.
func TestHoldingRequest(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	req := func(name string, created time.Time, holding ...string) FenceRequest {
		return FenceRequest{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)},
			Status: FenceRequestStatus{Environments: holding, Holding: holding}}
	}
	deleting := req("deleting", t0, "a")
	deleting.DeletionTimestamp = &metav1.Time{Time: t0.Add(time.Minute)}
	handedOver := req("handed-over", t0, "other")
	handedOver.Status.Environments = []string{"a", "other"}
	for _, tc := range []struct {
		name     string
		requests []FenceRequest
		want     string
	}{
		{"none", nil, ""},
		{"handed over: not held", []FenceRequest{handedOver}, ""},
		{"one", []FenceRequest{req("r1", t0, "a", "b")}, "r1"},
		{"the oldest of two", []FenceRequest{req("newer", t0.Add(time.Second), "a"), req("older", t0, "a")}, "older"},
		{"same second: by name", []FenceRequest{req("r2", t0, "a"), req("r1", t0, "a")}, "r1"},
		{"being deleted: still holds", []FenceRequest{deleting}, "deleting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if fr := HoldingRequest(tc.requests, "a"); fr != nil {
				got = fr.Name
			}
			if got != tc.want {
				t.Errorf("HoldingRequest = %q, want %q", got, tc.want)
			}
		})
	}
}
