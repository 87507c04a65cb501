package csidriver

import (
	"context"
	"maps"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type controllerServer struct {
	csi.UnimplementedControllerServer
	d *Driver
}

// controllerCapabilities leaves out PUBLISH_UNPUBLISH_VOLUME: there is no
// attach step (a CSIDriver object for this driver says attachRequired:
// false), and ControllerPublishVolume answers Unimplemented.
var controllerCapabilities = []csi.ControllerServiceCapability_RPC_Type{
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
	csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
	csi.ControllerServiceCapability_RPC_GET_CAPACITY,
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
	csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
}

func (s *controllerServer) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	caps := make([]*csi.ControllerServiceCapability, 0, len(controllerCapabilities))
	for _, c := range controllerCapabilities {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: c},
		}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (s *controllerServer) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume_capabilities are required")
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(req.GetMutableParameters()) > 0 {
		return nil, status.Error(codes.InvalidArgument, "mutable_parameters are not supported (no MODIFY_VOLUME)")
	}
	src, err := sourceOf(req.GetVolumeContentSource())
	if err != nil {
		return nil, err
	}
	rng, err := checkRange(req.GetCapacityRange())
	if err != nil {
		return nil, err
	}

	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()

	if v := d.store.volumeByName(req.GetName()); v != nil {
		switch {
		case !rng.fits(v.CapacityBytes):
			return nil, status.Errorf(codes.AlreadyExists, "volume %q exists with capacity %d bytes, outside the requested range", req.GetName(), v.CapacityBytes)
		case !maps.Equal(v.Parameters, req.GetParameters()):
			return nil, status.Errorf(codes.AlreadyExists, "volume %q exists with other parameters", req.GetName())
		case v.Source != src:
			return nil, status.Errorf(codes.AlreadyExists, "volume %q exists with another content source", req.GetName())
		}
		return &csi.CreateVolumeResponse{Volume: d.csiVolume(v)}, nil
	}

	var from string
	var minBytes int64
	switch {
	case src.SnapshotID != "":
		sn := d.store.snapshot(src.SnapshotID)
		if sn == nil {
			return nil, status.Errorf(codes.NotFound, "source snapshot %q does not exist", src.SnapshotID)
		}
		from, minBytes = d.store.snapshotDataDir(sn.ID), sn.SizeBytes
	case src.VolumeID != "":
		sv := d.store.volume(src.VolumeID)
		if sv == nil {
			return nil, status.Errorf(codes.NotFound, "source volume %q does not exist", src.VolumeID)
		}
		from, minBytes = d.store.volumeDataDir(sv.ID), sv.CapacityBytes
	}
	size, err := d.sizeFor(rng, minBytes)
	if err != nil {
		return nil, err
	}
	if free := d.cfg.CapacityBytes - d.store.allocated(); size > free {
		return nil, status.Errorf(codes.ResourceExhausted, "%d bytes requested, %d bytes free", size, free)
	}
	v := &volume{
		ID:            newID(volumePrefix),
		Name:          req.GetName(),
		CapacityBytes: size,
		Parameters:    req.GetParameters(),
		Source:        src,
		Created:       time.Now().UTC(),
	}
	if err := d.store.createVolume(v, from); err != nil {
		return nil, status.Errorf(codes.Internal, "creating volume %q: %v", req.GetName(), err)
	}
	return &csi.CreateVolumeResponse{Volume: d.csiVolume(v)}, nil
}

func (s *controllerServer) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.store.volume(req.GetVolumeId())
	if v == nil {
		return &csi.DeleteVolumeResponse{}, nil
	}
	if len(v.Publishes) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %q is published at %d target paths", v.ID, len(v.Publishes))
	}
	// Snapshots are copies, independent of the volume: they stay.
	if err := d.store.deleteVolume(v.ID); err != nil {
		return nil, status.Errorf(codes.Internal, "deleting volume %q: %v", v.ID, err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (s *controllerServer) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume_capabilities are required")
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.store.volume(req.GetVolumeId())
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "volume %q does not exist", req.GetVolumeId())
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	if req.GetParameters() != nil && !maps.Equal(req.GetParameters(), v.Parameters) {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: "the volume was created with other parameters"}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

func (s *controllerServer) ListVolumes(_ context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	page, next, err := paginate(d.store.sortedVolumes(), req.GetMaxEntries(), req.GetStartingToken())
	if err != nil {
		return nil, err
	}
	resp := &csi.ListVolumesResponse{NextToken: next}
	for _, v := range page {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{Volume: d.csiVolume(v)})
	}
	return resp, nil
}

func (s *controllerServer) GetCapacity(_ context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		// No volume with these capabilities can be created.
		return &csi.GetCapacityResponse{}, nil
	}
	free := d.cfg.CapacityBytes - d.store.allocated()
	return &csi.GetCapacityResponse{
		AvailableCapacity: free,
		MaximumVolumeSize: wrapperspb.Int64(free),
	}, nil
}

func (s *controllerServer) ControllerExpandVolume(_ context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if req.GetCapacityRange() == nil {
		return nil, status.Error(codes.InvalidArgument, "capacity_range is required")
	}
	if c := req.GetVolumeCapability(); c != nil {
		if err := checkCapabilities([]*csi.VolumeCapability{c}); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	rng, err := checkRange(req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.store.volume(req.GetVolumeId())
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "volume %q does not exist", req.GetVolumeId())
	}
	if rng.required <= v.CapacityBytes {
		if !rng.fits(v.CapacityBytes) {
			return nil, status.Errorf(codes.OutOfRange, "volume %q has %d bytes and cannot shrink", v.ID, v.CapacityBytes)
		}
		return &csi.ControllerExpandVolumeResponse{CapacityBytes: v.CapacityBytes}, nil
	}
	if free := d.cfg.CapacityBytes - d.store.allocated(); rng.required-v.CapacityBytes > free {
		return nil, status.Errorf(codes.OutOfRange, "growing volume %q to %d bytes needs %d bytes, %d bytes free", v.ID, rng.required, rng.required-v.CapacityBytes, free)
	}
	old := v.CapacityBytes
	v.CapacityBytes = rng.required
	if err := d.store.saveVolume(v); err != nil {
		v.CapacityBytes = old
		return nil, status.Errorf(codes.Internal, "expanding volume %q: %v", v.ID, err)
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: v.CapacityBytes}, nil
}

func (s *controllerServer) CreateSnapshot(_ context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	if req.GetSourceVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "source_volume_id is required")
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if sn := d.store.snapshotByName(req.GetName()); sn != nil {
		if sn.SourceVolumeID != req.GetSourceVolumeId() {
			return nil, status.Errorf(codes.AlreadyExists, "snapshot %q exists of another volume, %q", req.GetName(), sn.SourceVolumeID)
		}
		if !maps.Equal(sn.Parameters, req.GetParameters()) {
			return nil, status.Errorf(codes.AlreadyExists, "snapshot %q exists with other parameters", req.GetName())
		}
		return &csi.CreateSnapshotResponse{Snapshot: csiSnapshot(sn)}, nil
	}
	v := d.store.volume(req.GetSourceVolumeId())
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "source volume %q does not exist", req.GetSourceVolumeId())
	}
	sn := &snapshot{
		ID:             newID(snapshotPrefix),
		Name:           req.GetName(),
		SourceVolumeID: v.ID,
		SizeBytes:      v.CapacityBytes,
		Parameters:     req.GetParameters(),
		Created:        time.Now().UTC(),
		// The copy is complete when createSnapshot returns.
		ReadyToUse: true,
	}
	if err := d.store.createSnapshot(sn, d.store.volumeDataDir(v.ID)); err != nil {
		return nil, status.Errorf(codes.Internal, "creating snapshot %q: %v", req.GetName(), err)
	}
	return &csi.CreateSnapshotResponse{Snapshot: csiSnapshot(sn)}, nil
}

func (s *controllerServer) DeleteSnapshot(_ context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot_id is required")
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	sn := d.store.snapshot(req.GetSnapshotId())
	if sn == nil {
		return &csi.DeleteSnapshotResponse{}, nil
	}
	// Volumes restored from it are copies: they stay.
	if err := d.store.deleteSnapshot(sn.ID); err != nil {
		return nil, status.Errorf(codes.Internal, "deleting snapshot %q: %v", sn.ID, err)
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

func (s *controllerServer) ListSnapshots(_ context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	var matching []*snapshot
	for _, sn := range d.store.sortedSnapshots() {
		if id := req.GetSnapshotId(); id != "" && sn.ID != id {
			continue
		}
		if id := req.GetSourceVolumeId(); id != "" && sn.SourceVolumeID != id {
			continue
		}
		matching = append(matching, sn)
	}
	page, next, err := paginate(matching, req.GetMaxEntries(), req.GetStartingToken())
	if err != nil {
		return nil, err
	}
	resp := &csi.ListSnapshotsResponse{NextToken: next}
	for _, sn := range page {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: csiSnapshot(sn)})
	}
	return resp, nil
}

func (s *controllerServer) GetSnapshot(_ context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot_id is required")
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	sn := d.store.snapshot(req.GetSnapshotId())
	if sn == nil {
		return nil, status.Errorf(codes.NotFound, "snapshot %q does not exist", req.GetSnapshotId())
	}
	return &csi.GetSnapshotResponse{Snapshot: csiSnapshot(sn)}, nil
}

func (d *Driver) csiVolume(v *volume) *csi.Volume {
	out := &csi.Volume{
		VolumeId:      v.ID,
		CapacityBytes: v.CapacityBytes,
		VolumeContext: map[string]string{VolumeContextDataDir: d.store.volumeDataDir(v.ID)},
	}
	switch {
	case v.Source.SnapshotID != "":
		out.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: v.Source.SnapshotID},
		}}
	case v.Source.VolumeID != "":
		out.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
			Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: v.Source.VolumeID},
		}}
	}
	return out
}

func csiSnapshot(sn *snapshot) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     sn.ID,
		SourceVolumeId: sn.SourceVolumeID,
		SizeBytes:      sn.SizeBytes,
		CreationTime:   timestamppb.New(sn.Created),
		ReadyToUse:     sn.ReadyToUse,
	}
}

func sourceOf(cs *csi.VolumeContentSource) (contentSource, error) {
	switch {
	case cs == nil:
		return contentSource{}, nil
	case cs.GetSnapshot() != nil:
		if cs.GetSnapshot().GetSnapshotId() == "" {
			return contentSource{}, status.Error(codes.InvalidArgument, "volume_content_source.snapshot.snapshot_id is required")
		}
		return contentSource{SnapshotID: cs.GetSnapshot().GetSnapshotId()}, nil
	case cs.GetVolume() != nil:
		if cs.GetVolume().GetVolumeId() == "" {
			return contentSource{}, status.Error(codes.InvalidArgument, "volume_content_source.volume.volume_id is required")
		}
		return contentSource{VolumeID: cs.GetVolume().GetVolumeId()}, nil
	default:
		return contentSource{}, status.Error(codes.InvalidArgument, "volume_content_source names neither a snapshot nor a volume")
	}
}

// capacityRange is a checked CSI capacity range; zero means unset.
type capacityRange struct{ required, limit int64 }

func checkRange(r *csi.CapacityRange) (capacityRange, error) {
	c := capacityRange{required: r.GetRequiredBytes(), limit: r.GetLimitBytes()}
	if c.required < 0 || c.limit < 0 {
		return c, status.Error(codes.InvalidArgument, "capacity_range bytes must not be negative")
	}
	if c.limit > 0 && c.required > c.limit {
		return c, status.Errorf(codes.InvalidArgument, "capacity_range required_bytes %d exceeds limit_bytes %d", c.required, c.limit)
	}
	return c, nil
}

func (c capacityRange) fits(n int64) bool {
	return n >= c.required && (c.limit == 0 || n <= c.limit)
}

// sizeFor picks a new volume's capacity: what was required, or else the
// source's size or the default, within the limit; never smaller than the
// source (its bytes would not fit) nor larger than the whole capacity.
func (d *Driver) sizeFor(c capacityRange, minBytes int64) (int64, error) {
	size := c.required
	if size == 0 {
		size = d.cfg.DefaultVolumeBytes
		if minBytes > 0 {
			size = minBytes
		}
		if c.limit > 0 && size > c.limit {
			size = c.limit
		}
	}
	if size < minBytes {
		return 0, status.Errorf(codes.OutOfRange, "%d bytes is smaller than the source's %d bytes", size, minBytes)
	}
	if size > d.cfg.CapacityBytes {
		return 0, status.Errorf(codes.OutOfRange, "%d bytes is more than the driver's whole capacity, %d bytes", size, d.cfg.CapacityBytes)
	}
	return size, nil
}

// paginate returns the page of items that starts at token (an index into
// items; empty is the start) and holds at most maxEntries (0: all), and the
// token of the next page ("" after the last).
func paginate[T any](items []T, maxEntries int32, token string) ([]T, string, error) {
	if maxEntries < 0 {
		return nil, "", status.Error(codes.InvalidArgument, "max_entries must not be negative")
	}
	start := 0
	if token != "" {
		n, err := strconv.Atoi(token)
		if err != nil || n < 0 || n > len(items) {
			return nil, "", status.Errorf(codes.Aborted, "starting_token %q is not valid", token)
		}
		start = n
	}
	end := len(items)
	if maxEntries > 0 && start+int(maxEntries) < end {
		end = start + int(maxEntries)
	}
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	return items[start:end], next, nil
}
