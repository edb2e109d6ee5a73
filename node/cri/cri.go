// Package cri is the kubelet's client of a container runtime over CRI v1
// (k8s.io/cri-api), on a unix socket, as Kubernetes' kubelet talks to
// containerd or CRI-O.
package cri

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// maxMsgSize is the largest message accepted, as the kubelet's (16 MiB):
// a list of many containers is larger than gRPC's 4 MiB default.
const maxMsgSize = 16 << 20

// Client is a connection to a CRI runtime.
type Client struct {
	conn *grpc.ClientConn
	runtimeapi.RuntimeServiceClient
	runtimeapi.ImageServiceClient
}

// Dial connects to endpoint (unix:///path) and checks that the runtime
// speaks CRI v1, waiting up to timeout for it to answer.
func Dial(ctx context.Context, endpoint string, timeout time.Duration) (*Client, error) {
	if !strings.HasPrefix(endpoint, "unix://") {
		return nil, fmt.Errorf("container runtime endpoint %q: want unix:///path/to/socket", endpoint)
	}
	conn, err := grpc.NewClient(endpoint,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)))
	if err != nil {
		return nil, fmt.Errorf("container runtime %s: %w", endpoint, err)
	}
	c := &Client{conn: conn, RuntimeServiceClient: runtimeapi.NewRuntimeServiceClient(conn), ImageServiceClient: runtimeapi.NewImageServiceClient(conn)}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		v, err := c.Version(ctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true))
		if err == nil {
			if v.RuntimeApiVersion != "v1" {
				conn.Close()
				return nil, fmt.Errorf("container runtime %s speaks CRI %s, want v1", endpoint, v.RuntimeApiVersion)
			}
			return c, nil
		}
		if ctx.Err() != nil {
			conn.Close()
			return nil, fmt.Errorf("container runtime %s does not answer: %w", endpoint, err)
		}
	}
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
