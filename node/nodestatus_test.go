package node

import (
	"syscall"
	"testing"
)

func TestDiskPressed(t *testing.T) {
	for _, c := range []struct {
		fs   syscall.Statfs_t
		want bool
	}{
		{syscall.Statfs_t{Blocks: 1000, Bavail: 500, Files: 100, Ffree: 50}, false},
		{syscall.Statfs_t{Blocks: 1000, Bavail: 99, Files: 100, Ffree: 50}, true},
		{syscall.Statfs_t{Blocks: 1000, Bavail: 500, Files: 100, Ffree: 4}, true},
		{syscall.Statfs_t{}, false},
	} {
		if got := diskPressed(c.fs); got != c.want {
			t.Errorf("%+v: pressed %v, want %v", c.fs, got, c.want)
		}
	}
}
