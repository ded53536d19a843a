// Command etcd is the etcd server: the same entry point as the upstream binary (the root
// go.etcd.io/etcd/v3 module's main.go), which cannot be `go install`ed directly because its
// go.mod points the other etcd modules at local directories.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
