package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubeconfigFor returns a kubeconfig whose one context talks to server.
func kubeconfigFor(server string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["pontoon"] = &clientcmdapi.Cluster{Server: server}
	cfg.AuthInfos["pontoon"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["pontoon"] = &clientcmdapi.Context{Cluster: "pontoon", AuthInfo: "pontoon", Namespace: "default"}
	cfg.CurrentContext = "pontoon"
	return clientcmd.Write(*cfg)
}

func writeKubeconfig(path, server string) error {
	b, err := kubeconfigFor(server)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func kubeconfigCommand() *cobra.Command {
	var srv serverURL
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print a kubeconfig for kubectl and client-go that talks to a server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := kubeconfigFor(srv.url)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), string(b))
			return err
		},
	}
	srv.flag(cmd)
	return cmd
}
