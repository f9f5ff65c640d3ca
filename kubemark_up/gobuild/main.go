// Command kube-master is one executable for the four master components.
// It picks the component from the name it was started under (a link named
// etcd, kube-apiserver, kube-controller-manager or kube-scheduler), or from
// its first argument, so the four share one link step and one file on disk.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	_ "time/tzdata" // CronJob time zones, as the upstream commands do

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

var components = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
}

func run(name string, args []string) int {
	if name == "etcd" {
		etcdmain.Main(append([]string{"etcd"}, args...))
		return 0
	}
	newCommand, ok := components[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "kube-master: unknown component %q (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)\n", name)
		return 2
	}
	command := newCommand()
	command.SetArgs(args)
	return cli.Run(command)
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "kube-master" {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, "usage: kube-master COMPONENT [FLAGS...]")
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	os.Exit(run(name, args))
}
