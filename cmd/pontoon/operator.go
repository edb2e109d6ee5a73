package main

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pontoon-dev/pontoon/api/client"
)

// serverURL is the --server flag shared by the operator commands.
type serverURL struct{ url string }

// flag adds --server to cmd and its subcommands, which refuse to run
// with a value that is not a server's API URL.
func (s *serverURL) flag(cmd *cobra.Command) {
	def := os.Getenv("PONTOON_SERVER")
	if def == "" {
		def = "http://127.0.0.1:6443"
	}
	cmd.PersistentFlags().StringVar(&s.url, "server", def, "API address of any server (default $PONTOON_SERVER, else http://127.0.0.1:6443)")
	cmd.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if err := checkServerURL(s.url); err != nil {
			if !cmd.Flags().Changed("server") && os.Getenv("PONTOON_SERVER") != "" {
				return fmt.Errorf("$PONTOON_SERVER: %w", err)
			}
			return fmt.Errorf("--server: %w", err)
		}
		return nil
	}
}

// checkServerURL accepts http:// or https:// with a host and nothing after
// it: a server's API address, as --api-addr and --advertise give it.
func checkServerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		return fmt.Errorf("%q is not a server's API URL: want http://HOST:PORT", s)
	}
	return nil
}

func (s *serverURL) client() *client.Client { return client.New(s.url, nil) }

func table(header string) *tabwriter.Writer {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, header)
	return w
}

func operatorCommand() *cobra.Command {
	var srv serverURL
	cmd := &cobra.Command{Use: "operator", Short: "Operate a running cluster"}
	srv.flag(cmd)
	raftCmd := &cobra.Command{Use: "raft", Short: "Inspect and change the Raft configuration"}
	raftCmd.AddCommand(&cobra.Command{
		Use:   "list-peers",
		Short: "List the servers of the Raft configuration and their health, as the leader sees them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			peers, err := srv.client().Peers(cmd.Context())
			if err != nil {
				return err
			}
			w := table("NAME\tADDRESS\tSTATE\tVOTER\tHEALTHY\tLAST CONTACT")
			for _, p := range peers {
				fmt.Fprintf(w, "%s\t%s\t%s\t%t\t%t\t%s\n", p.Name, p.Address, p.State, p.Voter, p.Healthy, p.LastContact)
			}
			return w.Flush()
		},
	}, &cobra.Command{
		Use:   "remove-peer NAME",
		Short: "Remove a server from the Raft configuration for good",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := srv.client().RemovePeer(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Printf("removed %s\n", args[0])
			return nil
		},
	})
	cmd.AddCommand(raftCmd)
	return cmd
}

func membersCommand() *cobra.Command {
	var srv serverURL
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List every member of the gossip pool",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			members, err := srv.client().Members(cmd.Context())
			if err != nil {
				return err
			}
			w := table("NAME\tROLE\tSTATUS\tGOSSIP\tAPI\tRAFT")
			for _, m := range members {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Role, m.Status, m.GossipAddr, m.APIAddr, m.RaftAddr)
			}
			return w.Flush()
		},
	}
	srv.flag(cmd)
	return cmd
}
