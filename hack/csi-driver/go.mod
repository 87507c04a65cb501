// The CSI driver that the local test cluster's storage control plane talks
// to: its own module so that the operator's go.mod does not carry gRPC and
// the CSI conformance suite.
module github.com/careplane/careplane/hack/csi-driver

go 1.26.0

require (
	github.com/container-storage-interface/spec v1.14.0
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
)
