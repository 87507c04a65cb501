package fence

import (
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// TestPlanEvidence: once the window is closed (after record, deny policy
// and quota, before steps 2 to 4), every claim of the namespace, the
// tenant's too, gets one evidence snapshot per fence; one this fence took
// already is kept, not taken again; without a class that fits, no snapshot
// is planned and the reason says why, while the rest of the fence stands.
func TestPlanEvidence(t *testing.T) {
	const id = "2030-01-01T00:00:00.123456789Z"
	recovery := &v1alpha1.Recovery{VolumeSnapshotClassName: "csi-snap"}
	class := &SnapshotClass{Name: "csi-snap", Found: true, Driver: "csi.example"}
	drivers := map[string]string{"records-document-store-0": "csi.example", "tenant-scratch": "csi.example"}
	claims := []Object{
		{Name: "tenant-scratch"},
		{Name: "records-document-store-0", Labels: map[string]string{v1alpha1.LabelEnvironment: "wales-111"}},
	}
	takenAlready := Object{Name: EvidenceSnapshotName(id, "records-document-store-0"), Annotations: map[string]string{v1alpha1.AnnotationFenceID: id}}
	otherFence := Object{Name: EvidenceSnapshotName(id, "tenant-scratch"), Annotations: map[string]string{v1alpha1.AnnotationFenceID: "2029-01-01T00:00:00Z"}}
	tests := []struct {
		name       string
		recovery   *v1alpha1.Recovery
		class      *SnapshotClass
		drivers    map[string]string
		claims     []Object
		snapshots  []Object
		wantVerbs  []Verb // by claim, sorted by name
		wantReason string
	}{
		{name: "no claims, no evidence step", recovery: recovery, class: class, drivers: drivers},
		{name: "every claim snapshotted", recovery: recovery, class: class, drivers: drivers, claims: claims,
			wantVerbs: []Verb{VerbSnapshot, VerbSnapshot}},
		{name: "resumed: one taken already is kept", recovery: recovery, class: class, drivers: drivers, claims: claims,
			snapshots: []Object{takenAlready, otherFence}, wantVerbs: []Verb{VerbKeep, VerbSnapshot}},
		{name: "no recovery spec", class: class, drivers: drivers, claims: claims,
			wantVerbs: []Verb{VerbSkip, VerbSkip}, wantReason: v1alpha1.ReasonNoSnapshotClass},
		{name: "class not found", recovery: recovery, class: &SnapshotClass{Name: "csi-snap"}, drivers: drivers, claims: claims,
			wantVerbs: []Verb{VerbSkip, VerbSkip}, wantReason: v1alpha1.ReasonSnapshotClassNotFound},
		{name: "class of another driver", recovery: recovery, class: &SnapshotClass{Name: "csi-snap", Found: true, Driver: "ebs.csi.aws.com"},
			drivers: drivers, claims: claims, wantVerbs: []Verb{VerbSkip, VerbSkip}, wantReason: v1alpha1.ReasonSnapshotClassMismatch},
		{name: "taken already stays kept whatever the class", recovery: recovery, class: &SnapshotClass{Name: "csi-snap"}, drivers: drivers,
			claims: claims, snapshots: []Object{takenAlready}, wantVerbs: []Verb{VerbKeep, VerbSkip}, wantReason: v1alpha1.ReasonSnapshotClassNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := fencedEnv()
			env.Spec.Isolation.Ticket = "INC-7"
			env.Spec.Recovery = tt.recovery
			o := Observed{Env: env, Isolation: env.Spec.Isolation, Record: Record{ID: id, Source: SourceSpec},
				Claims: tt.claims, Snapshots: tt.snapshots, SnapshotClass: tt.class, ClaimDrivers: tt.drivers}
			p := PlanFence(o)
			checkPlan(t, o, p)
			snaps := p.Snapshots()
			var verbs []Verb
			for _, a := range snaps {
				verbs = append(verbs, a.Verb)
				if a.Step != 1 {
					t.Errorf("%s is step %d, want 1 (before anything may change the data)", a.Name, a.Step)
				}
				if a.Namespace != "wales-111-primary" || a.Name != EvidenceSnapshotName(id, a.From) {
					t.Errorf("snapshot %s/%s of %s", a.Namespace, a.Name, a.From)
				}
				if a.Verb == VerbSnapshot && !strings.Contains(a.Note, v1alpha1.LabelEvidence+"=INC-7") {
					t.Errorf("note %q does not say the ticket label", a.Note)
				}
				if a.Verb == VerbDelete {
					t.Errorf("the fence deletes a snapshot: %+v", a)
				}
			}
			if len(verbs) != len(tt.wantVerbs) {
				t.Fatalf("evidence actions %+v, want verbs %v", snaps, tt.wantVerbs)
			}
			for i := range verbs {
				if verbs[i] != tt.wantVerbs[i] {
					t.Errorf("claim %s: %s, want %s", snaps[i].From, verbs[i], tt.wantVerbs[i])
				}
			}
			if p.Evidence.Reason != tt.wantReason {
				t.Errorf("evidence reason %q (%s), want %q", p.Evidence.Reason, p.Evidence.Message, tt.wantReason)
			}
			// The evidence comes after the window is closed and before the
			// steps that change the namespace.
			last := -1
			for i, a := range p.Actions {
				if a.Kind == "VolumeSnapshot" {
					last = i
				}
			}
			for i, a := range p.Actions {
				if a.Step > 1 && i < last {
					t.Errorf("%s %s/%s (step %d) comes before the evidence", a.Verb, a.Kind, a.Name, a.Step)
				}
			}
		})
	}
}

// TestEvidenceNames: a snapshot name is a valid object name, one per fence
// and claim; the fence label is a valid label value.
func TestEvidenceNames(t *testing.T) {
	for _, id := range []string{"2030-01-01T00:00:00Z", "2030-01-01T00:00:00.123456789Z", "<now>"} {
		a, b := EvidenceSnapshotName(id, "records-document-store-0"), EvidenceSnapshotName("2031-01-01T00:00:00Z", "records-document-store-0")
		if a == b {
			t.Errorf("two fences share snapshot name %s", a)
		}
		if errs := validation.IsDNS1123Subdomain(a); len(errs) > 0 {
			t.Errorf("%s: %v", a, errs)
		}
		if errs := validation.IsValidLabelValue(IDLabel(id)); id != "<now>" && len(errs) > 0 {
			t.Errorf("label %s: %v", IDLabel(id), errs)
		}
	}
	long := EvidenceSnapshotName("2030-01-01T00:00:00Z", strings.Repeat("a", 260))
	if len(long) > 253 {
		t.Errorf("name of %d characters", len(long))
	}
}

// TestEvidenceCondition: a problem wins; otherwise True only when every
// snapshot of this fence on record is ready and every planned claim has one.
func TestEvidenceCondition(t *testing.T) {
	const id = "2030-01-01T00:00:00Z"
	ready := v1alpha1.EvidenceSnapshot{Name: "a", FenceID: id, Ready: true}
	pending := v1alpha1.EvidenceSnapshot{Name: "b", FenceID: id}
	older := v1alpha1.EvidenceSnapshot{Name: "c", FenceID: "2029-01-01T00:00:00Z"}
	for _, tt := range []struct {
		name       string
		id         string
		claims     int
		snaps      []v1alpha1.EvidenceSnapshot
		ev         Evidence
		wantStatus string
		wantReason string
	}{
		{"all ready", id, 1, []v1alpha1.EvidenceSnapshot{ready, older}, Evidence{}, "True", v1alpha1.ReasonEvidenceTaken},
		{"one pending", id, 2, []v1alpha1.EvidenceSnapshot{ready, pending}, Evidence{}, "False", v1alpha1.ReasonEvidencePending},
		{"a claim without one yet", id, 2, []v1alpha1.EvidenceSnapshot{ready}, Evidence{}, "False", v1alpha1.ReasonEvidencePending},
		{"another fence's do not count", id, 1, []v1alpha1.EvidenceSnapshot{older}, Evidence{}, "False", v1alpha1.ReasonEvidencePending},
		{"a problem wins", id, 1, []v1alpha1.EvidenceSnapshot{ready}, Evidence{Reason: v1alpha1.ReasonSnapshotFailed, Message: "m"}, "False", v1alpha1.ReasonSnapshotFailed},
		{"after the restore: all on record", "", -1, []v1alpha1.EvidenceSnapshot{ready, older}, Evidence{}, "False", v1alpha1.ReasonEvidencePending},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, reason, _ := EvidenceCondition(tt.id, tt.claims, tt.snaps, tt.ev)
			if string(status) != tt.wantStatus || reason != tt.wantReason {
				t.Errorf("%s/%s, want %s/%s", status, reason, tt.wantStatus, tt.wantReason)
			}
		})
	}
}

// TestEvidenceMetadata: an evidence pod keeps only the evidence,
// environment and evidence-service labels; the others are taken off and
// kept in an annotation, so that no selector of the tenant's (a NodePort
// Service's, a ReplicaSet's) matches it by a label it ran with. A pod that
// is evidence already has nothing to move, and its annotation is left.
func TestEvidenceMetadata(t *testing.T) {
	for _, tc := range []struct {
		name       string
		labels     map[string]string
		wantLabels map[string]any
		wantMoved  string // the annotation; "" when none is written
	}{
		{"careplane's pod",
			map[string]string{v1alpha1.LabelManagedBy: "careplane", v1alpha1.LabelEnvironment: "w", v1alpha1.LabelSite: "primary",
				v1alpha1.LabelService: "call-handling", build.LabelAppName: "call-handling", "pod-template-hash": "5797ffdd6c"},
			map[string]any{v1alpha1.LabelEvidence: "INC-1", v1alpha1.LabelEnvironment: "w", build.LabelEvidenceService: "call-handling",
				v1alpha1.LabelManagedBy: nil, v1alpha1.LabelSite: nil, v1alpha1.LabelService: nil, build.LabelAppName: nil, "pod-template-hash": nil},
			`{"app.kubernetes.io/managed-by":"careplane","app.kubernetes.io/name":"call-handling","careplane.io/service":"call-handling","careplane.io/site":"primary","pod-template-hash":"5797ffdd6c"}`},
		{"the tenant's pod, claiming another environment and a service",
			map[string]string{"app": "miner", v1alpha1.LabelEnvironment: "other", build.LabelEvidenceService: "call-handling"},
			map[string]any{v1alpha1.LabelEvidence: "INC-1", v1alpha1.LabelEnvironment: "w", "app": nil, build.LabelEvidenceService: nil},
			`{"app":"miner"}`},
		{"evidence of an earlier version, its labels kept",
			map[string]string{v1alpha1.LabelEvidence: "INC-1", v1alpha1.LabelEnvironment: "w", build.LabelEvidenceService: "referral",
				build.LabelAppName: "referral"},
			map[string]any{v1alpha1.LabelEvidence: "INC-1", v1alpha1.LabelEnvironment: "w", build.LabelAppName: nil},
			`{"app.kubernetes.io/name":"referral"}`},
		{"evidence already",
			map[string]string{v1alpha1.LabelEvidence: "INC-1", v1alpha1.LabelEnvironment: "w", build.LabelEvidenceService: "referral"},
			map[string]any{v1alpha1.LabelEvidence: "INC-1", v1alpha1.LabelEnvironment: "w"},
			""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			labels, ann, err := EvidenceMetadata(tc.labels, "INC-1", "w")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(labels, tc.wantLabels) {
				t.Errorf("labels = %v, want %v", labels, tc.wantLabels)
			}
			got := ""
			if ann != nil {
				got, _ = ann[build.AnnotationEvidenceLabels].(string)
			}
			if got != tc.wantMoved {
				t.Errorf("annotation = %q, want %q", got, tc.wantMoved)
			}
		})
	}
}
