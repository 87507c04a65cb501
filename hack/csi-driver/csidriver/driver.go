package csidriver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	// Name is the driver's name: a StorageClass's provisioner and a
	// VolumeSnapshotClass's driver.
	Name = "csi.careplane.io"
	// Version is reported by GetPluginInfo.
	Version = "0.1.0"
	// VolumeContextDataDir is the volume context key that holds the volume's
	// directory; Kubernetes copies it into the PersistentVolume's
	// spec.csi.volumeAttributes.
	VolumeContextDataDir = "csi.careplane.io/data-dir"
)

// Config configures a Driver.
type Config struct {
	// Root is the directory that holds every volume and snapshot.
	Root string
	// NodeID is what NodeGetInfo reports.
	NodeID string
	// CapacityBytes is the total capacity volumes may claim.
	CapacityBytes int64
	// DefaultVolumeBytes is a volume's size when CreateVolume asks for none.
	DefaultVolumeBytes int64
	// Logger logs every call; nil logs nothing.
	Logger *slog.Logger
}

// Driver is the CSI driver. Its methods serve one call at a time: the state
// is a few directories, and serialising keeps every call's check-then-act
// atomic, which is what the spec's idempotency rules need.
type Driver struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	store *store
}

// New opens (or creates) the driver's state under cfg.Root.
func New(cfg Config) (*Driver, error) {
	if cfg.Root == "" {
		return nil, errors.New("a root directory is required")
	}
	if cfg.NodeID == "" {
		return nil, errors.New("a node ID is required")
	}
	if cfg.CapacityBytes <= 0 {
		return nil, errors.New("the capacity must be positive")
	}
	if cfg.DefaultVolumeBytes <= 0 || cfg.DefaultVolumeBytes > cfg.CapacityBytes {
		return nil, errors.New("the default volume size must be positive and fit the capacity")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, err
	}
	cfg.Root = root
	s, err := openStore(root)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", root, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{cfg: cfg, log: log, store: s}, nil
}

// VolumeDataDir is the directory that holds the bytes of the volume id: what
// a pod would see at its mount path.
func (d *Driver) VolumeDataDir(id string) string { return d.store.volumeDataDir(id) }

// SnapshotDataDir is the directory that holds the copy a snapshot took.
func (d *Driver) SnapshotDataDir(id string) string { return d.store.snapshotDataDir(id) }

// Register serves the driver's Identity, Controller and Node services on s.
func (d *Driver) Register(s *grpc.Server) {
	csi.RegisterIdentityServer(s, &identityServer{d: d})
	csi.RegisterControllerServer(s, &controllerServer{d: d})
	csi.RegisterNodeServer(s, &nodeServer{d: d})
}

// NewServer returns a gRPC server with the driver's services registered and
// every call logged.
func (d *Driver) NewServer() *grpc.Server {
	s := grpc.NewServer(grpc.UnaryInterceptor(d.logCall))
	d.Register(s)
	return s
}

// Listen opens the endpoint: "unix:///path/csi.sock", "unix:/path" or a
// plain path. A stale socket file left by an earlier run is replaced.
func Listen(endpoint string) (net.Listener, error) {
	path := endpoint
	if p, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		path = p
	} else if p, ok := strings.CutPrefix(endpoint, "unix:"); ok {
		path = p
	}
	if path == "" {
		return nil, fmt.Errorf("endpoint %q names no socket", endpoint)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return net.Listen("unix", path)
}

func (d *Driver) logCall(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
	if err != nil {
		d.log.Info("CSI call failed", "method", method, "code", status.Code(err).String(), "error", status.Convert(err).Message())
	} else {
		d.log.Debug("CSI call", "method", method)
	}
	return resp, err
}

type identityServer struct {
	csi.UnimplementedIdentityServer
	d *Driver
}

func (s *identityServer) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: Name, VendorVersion: Version}, nil
}

func (s *identityServer) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{
			Type: csi.PluginCapability_Service_CONTROLLER_SERVICE,
		}}},
		// A directory has no size to grow: expansion is a new number, and it
		// may happen while the volume is published.
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{
			Type: csi.PluginCapability_VolumeExpansion_ONLINE,
		}}},
	}}, nil
}

func (s *identityServer) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	// New returned, so the state is loaded: ready.
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}
