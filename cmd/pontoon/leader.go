package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/pontoon-dev/pontoon/ctrl"
	"github.com/pontoon-dev/pontoon/sched"
)

// runLeaderDuties runs the scheduler and the controllers against the API
// cfg reaches until ctx ends; settings are the controllers' settings from
// the server's flags, the clients are filled in here. They share one
// informer factory, so the leader keeps one cache of each kind, and one
// event broadcaster.
func runLeaderDuties(ctx context.Context, cfg *rest.Config, settings ctrl.Config, logger *slog.Logger) error {
	// The clients name themselves as Kubernetes' components do, and the
	// API takes a writer's field manager from that name: the fields the
	// controllers and the scheduler own read as kube-controller-manager's
	// and kube-scheduler's, as tools that look at managedFields expect.
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = userAgent("kube-controller-manager")
	// The typed clients speak Protobuf, as kube-scheduler's and
	// kube-controller-manager's do by default (clientConnection.contentType):
	// a binding or a status update costs less to encode and decode than in
	// JSON, on both ends of the in-process call. The dynamic and metadata
	// clients keep JSON, which is all they read.
	typed := rest.CopyConfig(cfg)
	typed.ContentType = runtime.ContentTypeProtobuf
	typed.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	client, err := kubernetes.NewForConfig(typed)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	typed.UserAgent = userAgent("kube-scheduler")
	schedClient, err := kubernetes.NewForConfig(typed)
	if err != nil {
		return fmt.Errorf("scheduler client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("metadata client: %w", err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("discovery client: %w", err)
	}
	factory := ctrl.NewInformerFactory(client)
	events := record.NewBroadcaster(record.WithContext(ctx))
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer events.Shutdown()

	scheduler := sched.New(schedClient, factory, events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: sched.Name}), logger.With("component", "sched"))
	ccfg := settings
	ccfg.Client, ccfg.Dynamic, ccfg.Metadata, ccfg.Discovery = client, dyn, meta, disc
	ccfg.Informers, ccfg.Events, ccfg.Logger = factory, events, logger.With("component", "ctrl")
	// New asks the API which resources it serves; the leader's own API
	// answers at once, but a leader never gives up its controllers.
	controllers, err := ctrl.New(ccfg)
	for err != nil {
		logger.Warn("controllers did not start; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		controllers, err = ctrl.New(ccfg)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		scheduler.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		controllers.Run(ctx)
	}()
	wg.Wait()
	return nil
}

// userAgent is client-go's default User-Agent with component in place of
// the program's name.
func userAgent(component string) string {
	ua := rest.DefaultKubernetesUserAgent()
	return component + ua[strings.Index(ua, "/"):]
}
