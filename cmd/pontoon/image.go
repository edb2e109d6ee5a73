package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/pontoon-dev/pontoon/node/containerd"
)

func imageCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Images of a node"}
	var dataDir string
	imp := &cobra.Command{
		Use:   "import FILE...",
		Short: "Import image archives (OCI layout or `docker save` tar) into a running agent's containerd",
		Long: `Imports image archives into the containerd a running agent started under
its data dir. Images imported this way exist in no registry: pods use
them whatever their imagePullPolicy, and they are never pulled. Archives
put in the agent's images/ directory are imported at each start instead.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" {
				return errors.New("--data-dir is required: the agent's data dir (for pontoon dev, .pontoon/agent)")
			}
			socket := containerd.Socket(agentDirs(dataDir).containerd)
			if _, err := os.Stat(socket); err != nil {
				return fmt.Errorf("no agent's containerd under %s (is the agent running?): %w", dataDir, err)
			}
			for _, path := range args {
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				names, err := containerd.Import(cmd.Context(), socket, f)
				f.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				for _, n := range names {
					fmt.Println(n)
				}
			}
			return nil
		},
	}
	imp.Flags().StringVar(&dataDir, "data-dir", "", "the agent's data dir (required)")
	cmd.AddCommand(imp)
	return cmd
}
