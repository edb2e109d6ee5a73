package netproxy

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// manyServices are n Services of 5 endpoints each, as the proxy sync
// benchmark (make bench) loads them.
func manyServices(n int) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	var svcs []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	for i := range n {
		name := fmt.Sprintf("s%d", i)
		svcs = append(svcs, service(name, fmt.Sprintf("10.96.%d.%d", i/250, 1+i%250)))
		var eps []ep
		for e := range 5 {
			k := i*5 + e
			eps = append(eps, ep{fmt.Sprintf("10.244.%d.%d", 100+k/250%150, 1+k%250), "n2", true})
		}
		slices = append(slices, slice(name, 8080, eps...))
	}
	return svcs, slices
}

func BenchmarkCompute(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		svcs, slices := manyServices(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				rules := Compute(testConfig(), svcs, slices)
				restoreInput(rules, nil, nil)
			}
		})
	}
}

// BenchmarkOneServiceChange is a partial sync's computation after one
// Service's endpoint changed, among n.
func BenchmarkOneServiceChange(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		svcs, slices := manyServices(n)
		cache := serviceCache{}
		prev, _ := computeCached(testConfig(), svcs, slices, cache)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				changed := slices[n/2].DeepCopy()
				changed.Endpoints[0].Addresses[0] = fmt.Sprintf("10.244.250.%d", b.N%250)
				slices[n/2] = changed
				rules, _ := computeCached(testConfig(), svcs, slices, cache)
				restoreInput(rules, &prev, nil)
				prev = rules
			}
		})
	}
}
