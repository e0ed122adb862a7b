// Command etcd is the etcd server of the go.etcd.io/etcd/server/v3 module, for the hubploy sandbox.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
