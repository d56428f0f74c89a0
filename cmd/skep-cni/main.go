// Command skep-cni is skep's CNI plugin; see package cni.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/skep-dev/skep/cni"
)

func main() {
	skel.PluginMainFuncs(cni.Funcs(), cni.VersionInfo, cni.About)
}
