package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pontoon-dev/pontoon/jointoken"
)

// tokenFileName is where a server keeps its cluster's token in its data
// dir, for its restarts and for whoever adds a server or an agent.
const tokenFileName = "token"

// tokenOptions are the flags that give a process the cluster's token.
type tokenOptions struct {
	token, tokenFile, gossipKey string
}

func (o *tokenOptions) flags(f *pflag.FlagSet, who string) {
	f.StringVar(&o.token, "token", "", "the cluster's join token (a server's is in its data dir, file "+tokenFileName+"); "+who)
	f.StringVar(&o.tokenFile, "token-file", "", "a file holding the cluster's join token, instead of --token")
	f.StringVar(&o.gossipKey, "gossip-key", "", "the gossip pool's encryption key, base64 of 16, 24 or 32 bytes (default: derived from the token)")
}

// given returns the token --token or --token-file gives, or "".
func (o tokenOptions) given() (string, error) {
	switch {
	case o.token != "" && o.tokenFile != "":
		return "", errors.New("--token and --token-file: give one")
	case o.tokenFile != "":
		t, err := jointoken.Read(o.tokenFile)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		return t, nil
	case o.token != "":
		if err := jointoken.Check(o.token); err != nil {
			return "", fmt.Errorf("--token: %w", err)
		}
	}
	return o.token, nil
}

// secretKey is the gossip key: --gossip-key's, or the token's.
func (o tokenOptions) secretKey(token string) ([]byte, error) {
	if o.gossipKey != "" {
		k, err := jointoken.ParseGossipKey(o.gossipKey)
		if err != nil {
			return nil, fmt.Errorf("--gossip-key: %w", err)
		}
		return k, nil
	}
	return jointoken.GossipKey(token)
}

// serverToken is a server's token: the one the flags give, else the one
// its data dir keeps, else, for a server that bootstraps a cluster alone
// (--bootstrap-expect 1, `pontoon dev`), a new one; servers that
// bootstrap one together must be given the same. A token that differs
// from the data dir's is refused: the data belongs to another cluster.
// keep says the data dir has no token yet.
func serverToken(o tokenOptions, dataDir string, bootstrapExpect int) (token string, keep bool, err error) {
	given, err := o.given()
	if err != nil {
		return "", false, err
	}
	path := filepath.Join(dataDir, tokenFileName)
	kept, err := jointoken.Read(path)
	switch {
	case err == nil && given != "" && given != kept:
		return "", false, fmt.Errorf("the token given is not the one of the cluster this data dir belongs to (%s)", path)
	case err == nil:
		return kept, false, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", false, err
	case given != "":
		return given, true, nil
	case bootstrapExpect == 0:
		return "", false, fmt.Errorf("--token or --token-file is required to join a cluster: its token is in the data dir of any of its servers (%s)", tokenFileName)
	case bootstrapExpect > 1:
		return "", false, errors.New("--token or --token-file is required: the servers that bootstrap a cluster together share one (`pontoon token generate` makes one)")
	}
	token, err = jointoken.Generate()
	return token, true, err
}

func tokenCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Make a cluster join token", Args: cobra.NoArgs}
	cmd.AddCommand(&cobra.Command{
		Use:   "generate",
		Short: "Print a new join token, for servers that bootstrap a cluster together (--token-file)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			token, err := jointoken.Generate()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), token)
			return nil
		},
	})
	return cmd
}
