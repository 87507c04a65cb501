// Command careplane-csi is the CSI driver of the local test cluster: each
// volume a directory under --root, each snapshot a full copy of one. See
// package csidriver for what it simulates.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/careplane/careplane/hack/csi-driver/csidriver"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "careplane-csi:", err)
		os.Exit(1)
	}
}

func run() error {
	hostname, _ := os.Hostname()
	var (
		endpoint    = flag.String("endpoint", "unix:///tmp/careplane-csi/csi.sock", "the unix socket to serve CSI on")
		root        = flag.String("root", "", "the directory that holds every volume and snapshot (required)")
		nodeID      = flag.String("node-id", hostname, "the node ID NodeGetInfo reports")
		capacity    = flag.String("capacity", "1Ti", "the total capacity volumes may claim (bytes, or with a Ki, Mi, Gi or Ti suffix)")
		defaultSize = flag.String("default-volume-size", "1Gi", "a volume's size when CreateVolume asks for none")
		verbose     = flag.Bool("v", false, "log every call, not only failed ones")
	)
	flag.Parse()
	capacityBytes, err := parseBytes(*capacity)
	if err != nil {
		return fmt.Errorf("--capacity: %w", err)
	}
	defaultBytes, err := parseBytes(*defaultSize)
	if err != nil {
		return fmt.Errorf("--default-volume-size: %w", err)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	d, err := csidriver.New(csidriver.Config{
		Root:               *root,
		NodeID:             *nodeID,
		CapacityBytes:      capacityBytes,
		DefaultVolumeBytes: defaultBytes,
		Logger:             log,
	})
	if err != nil {
		return err
	}
	lis, err := csidriver.Listen(*endpoint)
	if err != nil {
		return err
	}
	srv := d.NewServer()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	log.Info("Serving CSI", "driver", csidriver.Name, "endpoint", *endpoint, "root", *root, "node", *nodeID)
	return srv.Serve(lis)
}

// parseBytes reads "1073741824", "512Mi" or "10Gi".
func parseBytes(s string) (int64, error) {
	digits, mult := s, int64(1)
	for i, suffix := range []string{"Ki", "Mi", "Gi", "Ti"} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			digits, mult = n, int64(1)<<(10*(i+1))
			break
		}
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	return n * mult, nil
}
