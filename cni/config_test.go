package cni

import (
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func TestLoadConfDefaults(t *testing.T) {
	c, err := LoadConf([]byte(`{"cniVersion":"1.1.0","name":"skep","type":"skep-cni","subnet":"10.244.3.0/24"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Bridge != "skep0" || c.MTU != 1500 || c.StoreDir() != "/var/lib/skep/cni/skep" || !c.Hairpin() {
		t.Fatalf("defaults: %+v", c)
	}
	if c.GatewayNet().String() != "10.244.3.1/24" || c.Pool().Size() != 253 {
		t.Fatalf("gateway %s size %d", c.GatewayNet(), c.Pool().Size())
	}
}

func TestConfList(t *testing.T) {
	off := false
	b, err := ConfList(NetConf{PluginConf: types.PluginConf{Name: "skep", CNIVersion: "1.0.0"},
		Subnet: "10.244.3.0/24", MTU: 1450, DataDir: "/run/skep", HairpinMode: &off})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatalf("libcni rejects %s: %v", b, err)
	}
	if list.Name != "skep" || list.CNIVersion != "1.0.0" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "skep-cni" {
		t.Fatalf("list %+v", list)
	}
	// What the plugin receives: libcni injects name and version.
	pc, err := libcni.InjectConf(list.Plugins[0], map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadConf(pc.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if c.MTU != 1450 || c.Hairpin() || c.StoreDir() != "/run/skep/skep" {
		t.Fatalf("plugin sees %+v", c)
	}
	if _, err := ConfList(NetConf{PluginConf: types.PluginConf{Name: "skep"}}); err == nil {
		t.Fatal("ConfList without a subnet succeeded")
	}
}
