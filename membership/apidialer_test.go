package membership

import (
	"slices"
	"testing"
)

func TestDialOrderPrefersFollowers(t *testing.T) {
	servers := []Member{
		{Name: "s1", Meta: Meta{APIAddr: "a1", Leader: true}},
		{Name: "s2", Meta: Meta{APIAddr: "a2"}},
		{Name: "s3", Meta: Meta{APIAddr: "a3"}},
	}
	noShuffle := func(int, func(i, j int)) {}
	for _, c := range []struct {
		last string
		want []string
	}{
		{"", []string{"a2", "a3", "a1"}},
		{"a3", []string{"a3", "a2", "a1"}},
		// The server reached last became the leader: followers first.
		{"a1", []string{"a2", "a3", "a1"}},
		{"gone", []string{"a2", "a3", "a1"}},
	} {
		if got := dialOrder(servers, c.last, noShuffle); !slices.Equal(got, c.want) {
			t.Errorf("last %q: order %v, want %v", c.last, got, c.want)
		}
	}
}
