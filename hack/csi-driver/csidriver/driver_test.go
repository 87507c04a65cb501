package csidriver

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const gi = int64(1) << 30

// clients talk to a driver served on a unix socket, as the Kubernetes
// sidecars do.
type clients struct {
	csi.IdentityClient
	csi.ControllerClient
	csi.NodeClient
	d        *Driver
	endpoint string
}

func testConfig(root string) Config {
	return Config{Root: root, NodeID: "node-1", CapacityBytes: 100 * gi, DefaultVolumeBytes: gi}
}

// serve starts the driver on a socket in a temporary directory and stops it
// when the test ends.
func serve(t *testing.T, cfg Config) *clients {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "unix://" + filepath.Join(t.TempDir(), "csi.sock")
	lis, err := Listen(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	srv := d.NewServer()
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() }) //nolint:errcheck,gosec // test teardown
	return &clients{
		IdentityClient:   csi.NewIdentityClient(conn),
		ControllerClient: csi.NewControllerClient(conn),
		NodeClient:       csi.NewNodeClient(conn),
		d:                d,
		endpoint:         endpoint,
	}
}

func mountRWO() []*csi.VolumeCapability {
	return []*csi.VolumeCapability{{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}}
}

func createVolume(t *testing.T, c *clients, name string, size int64, src *csi.VolumeContentSource) *csi.Volume {
	t.Helper()
	resp, err := c.CreateVolume(t.Context(), &csi.CreateVolumeRequest{
		Name:                name,
		CapacityRange:       &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities:  mountRWO(),
		VolumeContentSource: src,
	})
	if err != nil {
		t.Fatalf("CreateVolume %s: %v", name, err)
	}
	return resp.GetVolume()
}

func fromSnapshot(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id},
	}}
}

func fromVolume(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
		Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id},
	}}
}

// publishAt publishes the volume at a fresh target path, as the kubelet would
// for a pod, and returns the path the pod would see.
func publishAt(t *testing.T, c *clients, volumeID string) string {
	t.Helper()
	target := filepath.Join(t.TempDir(), "pod", "mount")
	if _, err := c.NodePublishVolume(t.Context(), &csi.NodePublishVolumeRequest{
		VolumeId: volumeID, TargetPath: target, VolumeCapability: mountRWO()[0],
	}); err != nil {
		t.Fatalf("NodePublishVolume %s: %v", volumeID, err)
	}
	return target
}

func writeRecords(t *testing.T, dir string, records map[string]string) {
	t.Helper()
	for name, content := range records {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func readRecords(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	// A published target path is a link to the volume: read what it points at.
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		got[rel] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func assertRecords(t *testing.T, what, dir string, want map[string]string) {
	t.Helper()
	got := readRecords(t, dir)
	if len(got) != len(want) {
		t.Errorf("%s holds %d records, want %d: %v", what, len(got), len(want), got)
	}
	for name, content := range want {
		if got[name] != content {
			t.Errorf("%s: record %s = %q, want %q", what, name, got[name], content)
		}
	}
}

// TestRecordsComeBackFromSnapshot is the use the test cluster has for the
// driver: records written into a volume, a snapshot, the records overwritten
// ("encrypted"), and a new volume restored from the snapshot holding the
// originals, while the overwritten volume is kept as it is (evidence).
func TestRecordsComeBackFromSnapshot(t *testing.T) {
	root := t.TempDir()
	c := serve(t, testConfig(root))
	ctx := t.Context()

	original := map[string]string{
		"patients/9434765919.json": `{"nhsNumber":"9434765919","allergies":["penicillin"]}`,
		"patients/9434765870.json": `{"nhsNumber":"9434765870","allergies":[]}`,
		"index.db":                 "records v1",
	}
	encrypted := map[string]string{
		"patients/9434765919.json": "ENCRYPTED",
		"patients/9434765870.json": "ENCRYPTED",
		"index.db":                 "ENCRYPTED",
		"README-RANSOM.txt":        "pay up",
	}

	vol := createVolume(t, c, "pvc-records", 2*gi, nil)
	mount := publishAt(t, c, vol.GetVolumeId())
	writeRecords(t, mount, original)

	snap, err := c.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snapshot-before", SourceVolumeId: vol.GetVolumeId()})
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	if !snap.GetSnapshot().GetReadyToUse() || snap.GetSnapshot().GetCreationTime() == nil {
		t.Errorf("snapshot: ready_to_use=%v creation_time=%v, want ready with a time", snap.GetSnapshot().GetReadyToUse(), snap.GetSnapshot().GetCreationTime())
	}

	writeRecords(t, mount, encrypted)

	restored := createVolume(t, c, "pvc-records-restored", 2*gi, fromSnapshot(snap.GetSnapshot().GetSnapshotId()))
	if restored.GetContentSource().GetSnapshot().GetSnapshotId() != snap.GetSnapshot().GetSnapshotId() {
		t.Errorf("restored volume's content source = %v, want the snapshot", restored.GetContentSource())
	}
	assertRecords(t, "the restored volume", publishAt(t, c, restored.GetVolumeId()), original)
	assertRecords(t, "the compromised volume", mount, encrypted)
	// Kubernetes copies the volume context into the PersistentVolume: a test
	// finds the bytes behind a claim there.
	assertRecords(t, "the restored volume's data-dir", restored.GetVolumeContext()[VolumeContextDataDir], original)

	// Writing to the restored volume changes neither the snapshot nor a later restore.
	writeRecords(t, c.d.VolumeDataDir(restored.GetVolumeId()), map[string]string{"index.db": "records v2"})
	again := createVolume(t, c, "pvc-records-again", 2*gi, fromSnapshot(snap.GetSnapshot().GetSnapshotId()))
	assertRecords(t, "a second restore", c.d.VolumeDataDir(again.GetVolumeId()), original)

	// A clone copies the volume as it is now.
	clone := createVolume(t, c, "pvc-evidence-clone", 2*gi, fromVolume(vol.GetVolumeId()))
	assertRecords(t, "the clone", c.d.VolumeDataDir(clone.GetVolumeId()), encrypted)

	// The snapshot is independent of its volume: it outlives it.
	if _, err := c.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.GetVolumeId(), TargetPath: mount}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(mount); !os.IsNotExist(err) {
		t.Errorf("the target path is still there after NodeUnpublishVolume: %v", err)
	}
	if _, err := c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.GetVolumeId()}); err != nil {
		t.Fatal(err)
	}
	last := createVolume(t, c, "pvc-records-after-delete", 2*gi, fromSnapshot(snap.GetSnapshot().GetSnapshotId()))
	assertRecords(t, "a restore after the source volume was deleted", c.d.VolumeDataDir(last.GetVolumeId()), original)

	// A restarted driver serves the same snapshot and volumes.
	c2 := serve(t, testConfig(root))
	list, err := c2.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: snap.GetSnapshot().GetSnapshotId()})
	if err != nil || len(list.GetEntries()) != 1 {
		t.Fatalf("ListSnapshots after a restart: %v, %v", list, err)
	}
	if got := list.GetEntries()[0].GetSnapshot(); !got.GetCreationTime().AsTime().Equal(snap.GetSnapshot().GetCreationTime().AsTime()) {
		t.Errorf("creation time after a restart = %v, want %v", got.GetCreationTime().AsTime(), snap.GetSnapshot().GetCreationTime().AsTime())
	}
	afterRestart := createVolume(t, c2, "pvc-records-after-restart", 2*gi, fromSnapshot(snap.GetSnapshot().GetSnapshotId()))
	assertRecords(t, "a restore after a restart", c2.d.VolumeDataDir(afterRestart.GetVolumeId()), original)
	again2 := createVolume(t, c2, "pvc-records-restored", 2*gi, fromSnapshot(snap.GetSnapshot().GetSnapshotId()))
	if again2.GetVolumeId() != restored.GetVolumeId() {
		t.Errorf("CreateVolume by the same name after a restart made volume %s, want the existing %s", again2.GetVolumeId(), restored.GetVolumeId())
	}
}

// TestSnapshotCopiesLinksNotTheirTargets: a symbolic link in a volume is
// copied as a link, so a tenant cannot pull a file from outside its volume
// into a snapshot, and a later change to the target does not change the
// snapshot.
func TestSnapshotCopiesLinksNotTheirTargets(t *testing.T) {
	c := serve(t, testConfig(t.TempDir()))
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("not the tenant's"), 0o600); err != nil {
		t.Fatal(err)
	}
	vol := createVolume(t, c, "pvc-links", gi, nil)
	if err := os.Symlink(outside, filepath.Join(c.d.VolumeDataDir(vol.GetVolumeId()), "link")); err != nil {
		t.Fatal(err)
	}
	snap, err := c.CreateSnapshot(t.Context(), &csi.CreateSnapshotRequest{Name: "snap-links", SourceVolumeId: vol.GetVolumeId()})
	if err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(c.d.SnapshotDataDir(snap.GetSnapshot().GetSnapshotId()), "link")
	fi, err := os.Lstat(copied)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the snapshot holds %s as %v, want a symbolic link", copied, fi.Mode())
	}
}

func TestErrorCodes(t *testing.T) {
	c := serve(t, testConfig(t.TempDir()))
	ctx := t.Context()
	vol := createVolume(t, c, "pvc-a", gi, nil)
	snap, err := c.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-a", SourceVolumeId: vol.GetVolumeId()})
	if err != nil {
		t.Fatal(err)
	}
	other := createVolume(t, c, "pvc-b", gi, nil)
	block := []*csi.VolumeCapability{{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}}
	create := func(name string, required, limit int64, params map[string]string, src *csi.VolumeContentSource) func() error {
		return func() error {
			_, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{
				Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: required, LimitBytes: limit},
				VolumeCapabilities: mountRWO(), Parameters: params, VolumeContentSource: src,
			})
			return err
		}
	}

	for _, tc := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"same name, same arguments", create("pvc-a", gi, 0, nil, nil), codes.OK},
		{"same name, a range the existing volume fits", create("pvc-a", gi/2, 2*gi, nil, nil), codes.OK},
		{"same name, other capacity", create("pvc-a", 2*gi, 0, nil, nil), codes.AlreadyExists},
		{"same name, other parameters", create("pvc-a", gi, 0, map[string]string{"tier": "fast"}, nil), codes.AlreadyExists},
		{"same name, another content source", create("pvc-a", gi, 0, nil, fromSnapshot(snap.GetSnapshot().GetSnapshotId())), codes.AlreadyExists},
		{"no name", create("", gi, 0, nil, nil), codes.InvalidArgument},
		{"required above limit", create("pvc-c", 2*gi, gi, nil, nil), codes.InvalidArgument},
		{"more than the whole capacity", create("pvc-c", 101*gi, 0, nil, nil), codes.OutOfRange},
		{"smaller than the source snapshot", create("pvc-c", gi/2, 0, nil, fromSnapshot(snap.GetSnapshot().GetSnapshotId())), codes.OutOfRange},
		{"source snapshot missing", create("pvc-c", gi, 0, nil, fromSnapshot("snap-0000000000000000")), codes.NotFound},
		{"source volume missing", create("pvc-c", gi, 0, nil, fromVolume("vol-0000000000000000")), codes.NotFound},
		{"a volume ID that is a path", create("pvc-c", gi, 0, nil, fromVolume("../../etc")), codes.NotFound},
		{"more than is free", create("pvc-c", 99*gi, 0, nil, nil), codes.ResourceExhausted},
		{"block volume", func() error {
			_, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-c", VolumeCapabilities: block})
			return err
		}, codes.InvalidArgument},
		{"no capabilities", func() error {
			_, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-c"})
			return err
		}, codes.InvalidArgument},
		{"snapshot: same name, same volume", func() error {
			_, err := c.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-a", SourceVolumeId: vol.GetVolumeId()})
			return err
		}, codes.OK},
		{"snapshot: same name, another volume", func() error {
			_, err := c.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-a", SourceVolumeId: other.GetVolumeId()})
			return err
		}, codes.AlreadyExists},
		{"snapshot of a missing volume", func() error {
			_, err := c.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-c", SourceVolumeId: "vol-0000000000000000"})
			return err
		}, codes.NotFound},
		{"expand beyond what is free", func() error {
			_, err := c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: vol.GetVolumeId(), CapacityRange: &csi.CapacityRange{RequiredBytes: 100 * gi}})
			return err
		}, codes.OutOfRange},
		{"shrink", func() error {
			_, err := c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: vol.GetVolumeId(), CapacityRange: &csi.CapacityRange{RequiredBytes: gi / 2, LimitBytes: gi / 2}})
			return err
		}, codes.OutOfRange},
		{"expand a missing volume", func() error {
			_, err := c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "vol-0000000000000000", CapacityRange: &csi.CapacityRange{RequiredBytes: gi}})
			return err
		}, codes.NotFound},
		{"list with a bad token", func() error {
			_, err := c.ListSnapshots(ctx, &csi.ListSnapshotsRequest{StartingToken: "x"})
			return err
		}, codes.Aborted},
		{"get a missing snapshot", func() error {
			_, err := c.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: "snap-0000000000000000"})
			return err
		}, codes.NotFound},
		{"no attach step", func() error {
			_, err := c.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: vol.GetVolumeId(), NodeId: "node-1"})
			return err
		}, codes.Unimplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != tc.want {
				t.Errorf("code %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCapacityIsAccounted(t *testing.T) {
	c := serve(t, testConfig(t.TempDir()))
	ctx := t.Context()
	free := func() int64 {
		t.Helper()
		resp, err := c.GetCapacity(ctx, &csi.GetCapacityRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetAvailableCapacity()
	}
	if got := free(); got != 100*gi {
		t.Fatalf("free capacity of an empty driver = %d, want %d", got, 100*gi)
	}
	vol := createVolume(t, c, "pvc-a", 10*gi, nil)
	if got := free(); got != 90*gi {
		t.Errorf("free capacity after a 10Gi volume = %d, want %d", got, 90*gi)
	}
	resp, err := c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: vol.GetVolumeId(), CapacityRange: &csi.CapacityRange{RequiredBytes: 30 * gi}})
	if err != nil || resp.GetCapacityBytes() != 30*gi || resp.GetNodeExpansionRequired() {
		t.Fatalf("ControllerExpandVolume to 30Gi = %v, %v", resp, err)
	}
	if got := free(); got != 70*gi {
		t.Errorf("free capacity after growing to 30Gi = %d, want %d", got, 70*gi)
	}
	// A snapshot is not a volume: it claims nothing.
	if _, err := c.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap", SourceVolumeId: vol.GetVolumeId()}); err != nil {
		t.Fatal(err)
	}
	if got := free(); got != 70*gi {
		t.Errorf("free capacity after a snapshot = %d, want %d", got, 70*gi)
	}
	if _, err := c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.GetVolumeId()}); err != nil {
		t.Fatal(err)
	}
	if got := free(); got != 100*gi {
		t.Errorf("free capacity after the delete = %d, want %d", got, 100*gi)
	}
	blockCaps, err := c.GetCapacity(ctx, &csi.GetCapacityRequest{VolumeCapabilities: []*csi.VolumeCapability{{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}}})
	if err != nil || blockCaps.GetAvailableCapacity() != 0 {
		t.Errorf("capacity for block volumes = %v, %v; want 0 (none can be made)", blockCaps, err)
	}
}

func TestListSnapshotsPagesAndFilters(t *testing.T) {
	c := serve(t, testConfig(t.TempDir()))
	ctx := t.Context()
	a := createVolume(t, c, "pvc-a", gi, nil)
	b := createVolume(t, c, "pvc-b", gi, nil)
	var want []string
	for _, name := range []string{"s1", "s2", "s3", "s4", "s5"} {
		src := a
		if name == "s3" {
			src = b
		}
		resp, err := c.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: src.GetVolumeId()})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, resp.GetSnapshot().GetSnapshotId())
	}

	var got []string
	token := ""
	pages := 0
	for {
		resp, err := c.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: 2, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, e := range resp.GetEntries() {
			got = append(got, e.GetSnapshot().GetSnapshotId())
		}
		if token = resp.GetNextToken(); token == "" {
			break
		}
	}
	if pages != 3 || len(got) != len(want) {
		t.Fatalf("paging by 2 gave %d pages with %v, want 3 pages with %v", pages, got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %s, want %s (oldest first)", i, got[i], want[i])
		}
	}

	bySource, err := c.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: b.GetVolumeId()})
	if err != nil || len(bySource.GetEntries()) != 1 || bySource.GetEntries()[0].GetSnapshot().GetSnapshotId() != want[2] {
		t.Errorf("ListSnapshots of volume b = %v, %v; want only %s", bySource, err, want[2])
	}
	byID, err := c.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: want[3]})
	if err != nil || len(byID.GetEntries()) != 1 || byID.GetEntries()[0].GetSnapshot().GetSnapshotId() != want[3] {
		t.Errorf("ListSnapshots by ID = %v, %v; want only %s", byID, err, want[3])
	}
	both, err := c.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: want[3], SourceVolumeId: b.GetVolumeId()})
	if err != nil || len(both.GetEntries()) != 0 {
		t.Errorf("ListSnapshots by an ID of another volume = %v, %v; want none", both, err)
	}
}

// TestPublishRules follows the spec's table for a second NodePublishVolume on one node.
func TestPublishRules(t *testing.T) {
	c := serve(t, testConfig(t.TempDir()))
	ctx := t.Context()
	vol := createVolume(t, c, "pvc-a", gi, nil)
	capWith := func(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
		return &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		}
	}
	dir := t.TempDir()
	pub := func(target string, mode csi.VolumeCapability_AccessMode_Mode, ro bool) error {
		_, err := c.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId: vol.GetVolumeId(), TargetPath: filepath.Join(dir, target), VolumeCapability: capWith(mode), Readonly: ro,
		})
		return err
	}
	single, multi := csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER
	for _, step := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"first publish", pub("t1", single, false), codes.OK},
		{"again, same arguments", pub("t1", single, false), codes.OK},
		{"same target, read-only", pub("t1", single, true), codes.AlreadyExists},
		{"another target, single writer", pub("t2", single, false), codes.FailedPrecondition},
	} {
		if got := status.Code(step.err); got != step.want {
			t.Errorf("%s: code %v, want %v (%v)", step.name, got, step.want, step.err)
		}
	}
	if _, err := c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.GetVolumeId()}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("DeleteVolume of a published volume: %v, want FailedPrecondition", err)
	}
	if _, err := c.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.GetVolumeId(), TargetPath: filepath.Join(dir, "t1")}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"multi writer", pub("t1", multi, false), codes.OK},
		{"multi writer, another target", pub("t2", multi, false), codes.OK},
	} {
		if got := status.Code(step.err); got != step.want {
			t.Errorf("%s: code %v, want %v (%v)", step.name, got, step.want, step.err)
		}
	}
	stats, err := c.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: vol.GetVolumeId(), VolumePath: filepath.Join(dir, "t2")})
	if err != nil {
		t.Fatal(err)
	}
	if u := stats.GetUsage()[0]; u.GetTotal() != gi || u.GetUsed() != 0 {
		t.Errorf("stats of an empty 1Gi volume: total %d used %d", u.GetTotal(), u.GetUsed())
	}
	if err := os.WriteFile(filepath.Join(dir, "t2", "record"), make([]byte, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	stats, err = c.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: vol.GetVolumeId(), VolumePath: filepath.Join(dir, "t1")})
	if err != nil || stats.GetUsage()[0].GetUsed() != 1000 {
		t.Errorf("stats after writing 1000 bytes through another target: %v, %v", stats, err)
	}
	// Something that is not ours at a target path stays.
	notOurs := filepath.Join(dir, "occupied")
	writeRecords(t, notOurs, map[string]string{"file": "x"})
	if err := pub("occupied", multi, false); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("publishing over a directory that is not empty: %v, want FailedPrecondition", err)
	}
	assertRecords(t, "the occupied directory", notOurs, map[string]string{"file": "x"})
}

func TestProbeAndInfo(t *testing.T) {
	c := serve(t, testConfig(t.TempDir()))
	info, err := c.GetPluginInfo(context.Background(), &csi.GetPluginInfoRequest{})
	if err != nil || info.GetName() != Name {
		t.Errorf("GetPluginInfo = %v, %v", info, err)
	}
	probe, err := c.Probe(context.Background(), &csi.ProbeRequest{})
	if err != nil || !probe.GetReady().GetValue() {
		t.Errorf("Probe = %v, %v; want ready", probe, err)
	}
	node, err := c.NodeGetInfo(context.Background(), &csi.NodeGetInfoRequest{})
	if err != nil || node.GetNodeId() != "node-1" {
		t.Errorf("NodeGetInfo = %v, %v", node, err)
	}
}

// TestListenReplacesOnlyASocket: a stale socket from an earlier run is
// replaced, but an endpoint that names some other file leaves it alone.
func TestListenReplacesOnlyASocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	lis, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	// A listener that is closed without unlinking leaves the file, as a killed process does.
	lis.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	lis.Close() //nolint:errcheck,gosec // only the file left behind matters
	lis, err = Listen(sock)
	if err != nil {
		t.Fatalf("listening again on a stale socket: %v", err)
	}
	lis.Close() //nolint:errcheck,gosec // test teardown

	file := filepath.Join(dir, "records.db")
	if err := os.WriteFile(file, []byte("records"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix:" + file); err == nil {
		t.Error("Listen on a regular file succeeded, want an error")
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "records" {
		t.Errorf("the file an endpoint named is now %q, %v; want it untouched", b, err)
	}
}

// TestConcurrentCreatesMakeOneVolume: the sidecars retry and may run calls
// for one name at once; all of them get the same volume, and only one
// volume's capacity is claimed.
func TestConcurrentCreatesMakeOneVolume(t *testing.T) {
	c := serve(t, testConfig(t.TempDir()))
	const n = 10
	ids := make(chan string, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			resp, err := c.CreateVolume(t.Context(), &csi.CreateVolumeRequest{
				Name: "pvc-raced", CapacityRange: &csi.CapacityRange{RequiredBytes: gi}, VolumeCapabilities: mountRWO(),
			})
			errs <- err
			ids <- resp.GetVolume().GetVolumeId()
		}()
	}
	seen := map[string]bool{}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
		seen[<-ids] = true
	}
	if len(seen) != 1 {
		t.Errorf("%d concurrent creates of one name made volumes %v, want one", n, seen)
	}
	list, err := c.ListVolumes(t.Context(), &csi.ListVolumesRequest{})
	if err != nil || len(list.GetEntries()) != 1 {
		t.Errorf("ListVolumes = %v, %v; want one volume", list, err)
	}
	capacity, err := c.GetCapacity(t.Context(), &csi.GetCapacityRequest{})
	if err != nil || capacity.GetAvailableCapacity() != 99*gi {
		t.Errorf("free capacity = %v, %v; want 99Gi", capacity, err)
	}
}
