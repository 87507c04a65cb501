package csidriver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type nodeServer struct {
	csi.UnimplementedNodeServer
	d *Driver
}

func (s *nodeServer) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: s.d.cfg.NodeID}, nil
}

// NodeGetCapabilities leaves out STAGE_UNSTAGE_VOLUME: there is nothing to
// stage when publishing is a symbolic link.
func (s *nodeServer) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, c := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: c},
		}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// NodePublishVolume makes target_path a symbolic link to the volume's
// directory (a bind mount would need privileges) and records the publish.
// read_only is recorded, not enforced.
func (s *nodeServer) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "target_path is required")
	}
	if req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume_capability is required")
	}
	if err := checkCapabilities([]*csi.VolumeCapability{req.GetVolumeCapability()}); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	target := filepath.Clean(req.GetTargetPath())
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.store.volume(req.GetVolumeId())
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "volume %q does not exist", req.GetVolumeId())
	}
	p := publish{ReadOnly: req.GetReadonly(), AccessMode: int32(req.GetVolumeCapability().GetAccessMode().GetMode())}
	if prev, ok := v.Publishes[target]; ok {
		if prev != p {
			return nil, status.Errorf(codes.AlreadyExists, "volume %q is published at %q with other arguments", v.ID, target)
		}
	} else {
		// The spec's table for a second publish on one node at another target path.
		for other, prev := range v.Publishes {
			if !sharable(prev.AccessMode) || !sharable(p.AccessMode) {
				return nil, status.Errorf(codes.FailedPrecondition, "volume %q is already published at %q and its access mode allows one", v.ID, other)
			}
		}
	}
	if err := link(target, d.store.volumeDataDir(v.ID)); err != nil {
		return nil, err
	}
	if v.Publishes == nil {
		v.Publishes = map[string]publish{}
	}
	v.Publishes[target] = p
	if err := d.store.saveVolume(v); err != nil {
		delete(v.Publishes, target)
		return nil, status.Errorf(codes.Internal, "recording the publish of %q: %v", v.ID, err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (s *nodeServer) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "target_path is required")
	}
	target := filepath.Clean(req.GetTargetPath())
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.store.volume(req.GetVolumeId())
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "volume %q does not exist", req.GetVolumeId())
	}
	// Only our own link goes: whatever else is at the path is not ours.
	if dest, err := os.Readlink(target); err == nil && dest == d.store.volumeDataDir(v.ID) {
		if err := os.Remove(target); err != nil {
			return nil, status.Errorf(codes.Internal, "removing %q: %v", target, err)
		}
	}
	if _, ok := v.Publishes[target]; ok {
		delete(v.Publishes, target)
		if err := d.store.saveVolume(v); err != nil {
			return nil, status.Errorf(codes.Internal, "recording the unpublish of %q: %v", v.ID, err)
		}
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (s *nodeServer) NodeGetVolumeStats(_ context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if req.GetVolumePath() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_path is required")
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.store.volume(req.GetVolumeId())
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "volume %q does not exist", req.GetVolumeId())
	}
	if _, ok := v.Publishes[filepath.Clean(req.GetVolumePath())]; !ok {
		return nil, status.Errorf(codes.NotFound, "volume %q is not published at %q", v.ID, req.GetVolumePath())
	}
	used, err := usedBytes(d.store.volumeDataDir(v.ID))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "measuring volume %q: %v", v.ID, err)
	}
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{{
		Unit:      csi.VolumeUsage_BYTES,
		Total:     v.CapacityBytes,
		Used:      used,
		Available: max(0, v.CapacityBytes-used),
	}}}, nil
}

// link makes target a symbolic link to dir. An empty directory at target
// (some COs create one) is replaced; anything else there is an error.
func link(target, dir string) error {
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return status.Errorf(codes.Internal, "creating the parent of %q: %v", target, err)
		}
	case err != nil:
		return status.Errorf(codes.Internal, "inspecting %q: %v", target, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		if dest, err := os.Readlink(target); err == nil && dest == dir {
			return nil
		}
		return status.Errorf(codes.FailedPrecondition, "target path %q is a link to something else", target)
	case fi.IsDir():
		// os.Remove fails on a directory that is not empty, which is the check.
		if err := os.Remove(target); err != nil {
			return status.Errorf(codes.FailedPrecondition, "target path %q is a directory that is not empty", target)
		}
	default:
		return status.Errorf(codes.FailedPrecondition, "target path %q exists and is not a directory", target)
	}
	if err := os.Symlink(dir, target); err != nil {
		return status.Errorf(codes.Internal, "linking %q: %v", target, err)
	}
	return nil
}

// sharable reports whether an access mode lets a volume be published at
// several target paths on one node.
func sharable(mode int32) bool {
	switch csi.VolumeCapability_AccessMode_Mode(mode) {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		return true
	}
	return false
}

// checkCapabilities accepts filesystem ("mount") volumes in any known access
// mode: every node is this one machine, so a directory can be shared. Block
// volumes are refused: a volume is a directory, not a device.
func checkCapabilities(caps []*csi.VolumeCapability) error {
	for _, c := range caps {
		if c.GetMount() == nil {
			if c.GetBlock() != nil {
				return errors.New("block volumes are not supported: a volume is a directory")
			}
			return errors.New("volume_capability needs an access_type (mount)")
		}
		m := c.GetAccessMode().GetMode()
		if _, known := csi.VolumeCapability_AccessMode_Mode_name[int32(m)]; !known || m == csi.VolumeCapability_AccessMode_UNKNOWN {
			return fmt.Errorf("access mode %v is not supported", m)
		}
	}
	return nil
}
