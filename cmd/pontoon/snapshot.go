package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/pontoon-dev/pontoon/fsm"
)

// verifySnapshot checks the snapshot file at path the same way a server
// does before restoring it.
func verifySnapshot(path string) (fsm.SnapshotInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return fsm.SnapshotInfo{}, err
	}
	defer f.Close()
	tmp, info, err := fsm.ReadSnapshot(f, filepath.Dir(path))
	if err != nil {
		return info, fmt.Errorf("%s: %w", path, err)
	}
	os.Remove(tmp)
	return info, nil
}

func snapshotCommand() *cobra.Command {
	var srv serverURL
	cmd := &cobra.Command{Use: "snapshot", Short: "Save, inspect and restore snapshots of the cluster's state"}
	srv.flag(cmd)
	cmd.AddCommand(&cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent snapshot of the cluster to FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			part := args[0] + ".part"
			f, err := os.Create(part)
			if err != nil {
				return err
			}
			defer os.Remove(part)
			err = srv.client().SaveSnapshot(cmd.Context(), f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			info, err := verifySnapshot(part)
			if err != nil {
				return err
			}
			if err := os.Rename(part, args[0]); err != nil {
				return err
			}
			fmt.Printf("saved snapshot at index %d (%d objects, %d bytes) to %s\n", info.Index, info.Objects, info.Size, args[0])
			return nil
		},
	}, &cobra.Command{
		Use:   "inspect FILE",
		Short: "Verify a snapshot file and show what it holds",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			info, err := verifySnapshot(args[0])
			if err != nil {
				return err
			}
			w := table("INDEX\tTERM\tSIZE\tOBJECTS")
			fmt.Fprintf(w, "%d\t%d\t%d\t%d\n", info.Index, info.Term, info.Size, info.Objects)
			return w.Flush()
		},
	}, &cobra.Command{
		Use:   "restore FILE",
		Short: "Restore the running cluster to the snapshot in FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := verifySnapshot(args[0]); err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			info, err := srv.client().RestoreSnapshot(cmd.Context(), f)
			if err != nil {
				return err
			}
			fmt.Printf("restored %d objects from %s\n", info.Objects, args[0])
			return nil
		},
	})
	return cmd
}
