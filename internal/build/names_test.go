package build

import (
	"testing"

	"github.com/careplane/careplane/api/v1alpha1"
)

func TestNamespaceNames(t *testing.T) {
	tests := []struct {
		standby v1alpha1.StandbyMode
		want    Names
	}{
		{standby: "", want: Names{Front: "wales-111", Primary: "wales-111-primary"}},
		{standby: v1alpha1.StandbyNone, want: Names{Front: "wales-111", Primary: "wales-111-primary"}},
		{standby: v1alpha1.StandbyWarm, want: Names{Front: "wales-111", Primary: "wales-111-primary", Standby: "wales-111-standby"}},
		{standby: v1alpha1.StandbyCold, want: Names{Front: "wales-111", Primary: "wales-111-primary", Standby: "wales-111-standby"}},
	}
	for _, tt := range tests {
		t.Run(string(tt.standby), func(t *testing.T) {
			env := env111()
			env.Spec.Failover.Standby = tt.standby
			got := NamespaceNames(env)
			if got != tt.want {
				t.Fatalf("NamespaceNames = %+v, want %+v", got, tt.want)
			}
			if got.ForSite(v1alpha1.SitePrimary) != tt.want.Primary || got.ForSite(v1alpha1.SiteStandby) != tt.want.Standby {
				t.Errorf("ForSite disagrees with the fields: %+v", got)
			}
			if got.ForSite("Elsewhere") != "" {
				t.Errorf("ForSite(unknown) = %q, want empty", got.ForSite("Elsewhere"))
			}
			if HasStandby(env) != (tt.want.Standby != "") {
				t.Errorf("HasStandby = %v with standby %q", HasStandby(env), tt.standby)
			}
		})
	}
}

func TestSiteLabel(t *testing.T) {
	tests := []struct {
		site v1alpha1.Site
		want string
	}{
		{v1alpha1.SitePrimary, "primary"},
		{v1alpha1.SiteStandby, "standby"},
		{"Elsewhere", "elsewhere"},
	}
	for _, tt := range tests {
		if got := SiteLabel(tt.site); got != tt.want {
			t.Errorf("SiteLabel(%q) = %q, want %q", tt.site, got, tt.want)
		}
	}
}

func TestObjectNames(t *testing.T) {
	tests := []struct{ got, want string }{
		{ServicePolicyName("referral"), "svc-referral"},
		{GeneratedSecretName("referral", "db-password"), "referral.db-password"},
		{GeneratedSecretObjectName(v1alpha1.SitePrimary, "referral", "db-password", ""), "referral.db-password"},
		{GeneratedSecretObjectName(v1alpha1.SitePrimary, "referral", "db-password", InitialCredentials), "referral.db-password"},
		{GeneratedSecretObjectName(v1alpha1.SitePrimary, "referral", "db-password", "2026-12-07T21:00:00.5Z"), "referral.db-password.b1ab28d563"},
		{GeneratedSecretObjectName(v1alpha1.SiteStandby, "referral", "db-password", "2026-12-07T21:00:00.5Z"), "referral.db-password"},
		{FrontEndpointSliceName("referral"), "referral-careplane"},
		{SiteNamespace(env111(), v1alpha1.SiteStandby), "wales-111-standby"},
		{FrontNamespace(env111()), "wales-111"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// TestIsGeneratedSecretObject: every revision's Secret of a generated
// secret is recognised as it, and no other service's or secret's is, though
// one name starts another's.
func TestIsGeneratedSecretObject(t *testing.T) {
	rotated := GeneratedSecretObjectName(v1alpha1.SitePrimary, "call", "key", "r1")
	tests := []struct {
		object string
		want   bool
	}{
		{"call.key", true},
		{rotated, true},
		{"call.key.", false},
		{"call.key.a.b", false},
		{"call.key.bak", false},
		{"call.key.0123456789a", false},
		{"call.key.012345678g", false},
		{"call.key.ABCDEF0123", false},
		{"call.keys", false},
		{"call.key-2", false},
		{"call-handling.key", false},
		{"call", false},
	}
	for _, tt := range tests {
		if got := IsGeneratedSecretObject(tt.object, "call", "key"); got != tt.want {
			t.Errorf("IsGeneratedSecretObject(%q, call, key) = %t, want %t", tt.object, got, tt.want)
		}
	}
}
