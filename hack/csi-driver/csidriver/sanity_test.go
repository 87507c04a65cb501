package csidriver

import (
	"path/filepath"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
)

// TestSanity runs the CSI conformance suite, csi-sanity, against the driver
// served on a unix socket: the Identity, Controller (volumes, snapshots,
// expansion, capacity) and Node specs. What it skips, it skips because the
// driver does not advertise the capability: no ControllerPublishVolume, no
// NodeStageVolume, no NodeExpandVolume, no ModifyVolume, no volume or
// storage health, no group snapshots, no snapshot topology. None is skipped
// because of the simulation: publishing as a symbolic link satisfies the
// Node specs.
//
// Run one spec with -ginkgo.focus, e.g.
// go test -run TestSanity . -ginkgo.focus=ListSnapshots -ginkgo.v
func TestSanity(t *testing.T) {
	dir := t.TempDir()
	c := serve(t, Config{
		Root:   filepath.Join(dir, "root"),
		NodeID: "sanity-node",
		// The suite's volumes are 10Gi and it keeps up to ten at once.
		CapacityBytes:      1 << 40,
		DefaultVolumeBytes: gi,
	})
	cfg := sanity.NewTestConfig()
	cfg.Address = c.endpoint
	// Paths of this test, not the suite's default under /tmp, which two runs
	// on one machine would share.
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	sanity.Test(t, cfg)
}
