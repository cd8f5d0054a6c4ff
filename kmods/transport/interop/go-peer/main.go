// A stock go-libp2p peer for Lamina's interoperability test: TCP, noise, yamux and a private
// network (pnet) only, with an Ed25519 identity from a seed. It dials the loopback peer it is
// given, runs identify and ping, and prints one JSON line saying how far it got. Nothing in
// it is Lamina's: if it connects, a stock libp2p peer with the key and an allowed id does.
//
//	go-peer -psk swarm.key -seed <64 hex> -print-id
//	go-peer -psk swarm.key -seed <64 hex> -dial /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo… [-pings 3] [-timeout 10s]
//	go-peer -psk swarm.key -seed <64 hex> -listen /ip4/127.0.0.1/tcp/0   (serves until stdin closes)
package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// result is the one JSON line printed by a dial.
type result struct {
	PeerID          string    `json:"peerId"`
	Remote          string    `json:"remote,omitempty"`
	Connected       bool      `json:"connected"`
	Identified      bool      `json:"identified"`
	Protocols       []string  `json:"protocols,omitempty"`
	AgentVersion    string    `json:"agentVersion,omitempty"`
	ProtocolVersion string    `json:"protocolVersion,omitempty"`
	PingRTTMs       []float64 `json:"pingRttMs,omitempty"`
	ConnectMs       float64   `json:"connectMs,omitempty"`
	// Stage is where it stopped: "done", or the step that failed ("connect", "identify", "ping").
	Stage string `json:"stage"`
	Error string `json:"error,omitempty"`
}

func main() {
	pskFile := flag.String("psk", "", "swarm key file (/key/swarm/psk/1.0.0/, /base16/, 64 hex digits)")
	seedHex := flag.String("seed", "", "Ed25519 seed of this peer's identity, 64 hex digits")
	keyFile := flag.String("key", "", "file holding this peer's private key in libp2p protobuf form (instead of -seed)")
	printID := flag.Bool("print-id", false, "print this peer's id as JSON and exit")
	dial := flag.String("dial", "", "loopback multiaddr of the peer to dial, ending in /p2p/<id>")
	listen := flag.String("listen", "", "loopback multiaddr to listen on (serves until stdin closes)")
	pings := flag.Int("pings", 3, "pings to send after identify")
	timeout := flag.Duration("timeout", 10*time.Second, "time allowed for connect, identify and ping")
	flag.Parse()

	key, err := identity(*seedHex, *keyFile)
	if err != nil {
		fail(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		fail(err)
	}
	if *printID {
		emit(map[string]string{"peerId": id.String()})
		return
	}
	if (*dial == "") == (*listen == "") {
		fail(errors.New("give exactly one of -dial and -listen"))
	}
	psk, err := readPSK(*pskFile)
	if err != nil {
		fail(err)
	}
	options := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.PrivateNetwork(psk),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionGater(loopbackOnly{}),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.Ping(true),
	}
	if *listen != "" {
		address, err := loopback(*listen)
		if err != nil {
			fail(err)
		}
		options = append(options, libp2p.ListenAddrs(address))
	} else {
		options = append(options, libp2p.NoListenAddrs)
	}
	h, err := libp2p.New(options...)
	if err != nil {
		fail(err)
	}
	defer h.Close()
	if *listen != "" {
		serve(h)
		return
	}
	emit(dialPeer(h, *dial, *pings, *timeout))
}

// dialPeer connects to the peer at address, waits for identify, then pings it.
func dialPeer(h host.Host, address string, pings int, timeout time.Duration) result {
	out := result{PeerID: h.ID().String(), Stage: "connect"}
	target, err := loopback(address)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	info, err := peer.AddrInfoFromP2pAddr(target)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.Remote = info.ID.String()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	started := time.Now()
	// Connect returns once identify has run on the new connection (or failed).
	if err := h.Connect(ctx, *info); err != nil {
		out.Error = err.Error()
		return out
	}
	out.ConnectMs = float64(time.Since(started).Microseconds()) / 1000
	out.Connected = h.Network().Connectedness(info.ID) == network.Connected
	out.Stage = "identify"
	protocols, err := h.Peerstore().GetProtocols(info.ID)
	if err != nil || len(protocols) == 0 {
		out.Error = fmt.Sprintf("identify gave no protocols (connected: %v): %v", out.Connected, err)
		return out
	}
	out.Identified = true
	for _, p := range protocols {
		out.Protocols = append(out.Protocols, string(p))
	}
	if agent, err := h.Peerstore().Get(info.ID, "AgentVersion"); err == nil {
		out.AgentVersion, _ = agent.(string)
	}
	if version, err := h.Peerstore().Get(info.ID, "ProtocolVersion"); err == nil {
		out.ProtocolVersion, _ = version.(string)
	}
	out.Stage = "ping"
	results := ping.Ping(ctx, h, info.ID)
	for i := 0; i < pings; i++ {
		r, ok := <-results
		if !ok {
			out.Error = "ping stopped: " + ctx.Err().Error()
			return out
		}
		if r.Error != nil {
			out.Error = r.Error.Error()
			return out
		}
		out.PingRTTMs = append(out.PingRTTMs, float64(r.RTT.Microseconds())/1000)
	}
	out.Stage = "done"
	return out
}

// serve prints the listening addresses, then serves (identify and ping) until stdin closes.
func serve(h host.Host) {
	var addresses []string
	for _, a := range h.Addrs() {
		addresses = append(addresses, a.String()+"/p2p/"+h.ID().String())
	}
	emit(map[string]any{"peerId": h.ID().String(), "listening": addresses})
	reader := bufio.NewReader(os.Stdin)
	for {
		if _, err := reader.ReadByte(); err != nil {
			return
		}
	}
}

// identity reads the private key from a seed (hex) or a libp2p protobuf key file.
func identity(seedHex, keyFile string) (crypto.PrivKey, error) {
	if (seedHex == "") == (keyFile == "") {
		return nil, errors.New("give exactly one of -seed and -key")
	}
	if keyFile != "" {
		bytes, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, err
		}
		return crypto.UnmarshalPrivateKey(bytes)
	}
	seed, err := hex.DecodeString(seedHex)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("-seed must be %d hex digits", 2*ed25519.SeedSize)
	}
	return crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed))
}

func readPSK(path string) (pnet.PSK, error) {
	if path == "" {
		return nil, errors.New("-psk is required")
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	return pnet.DecodeV1PSK(file)
}

// loopback parses a multiaddr and refuses any that is not on a loopback address.
func loopback(text string) (ma.Multiaddr, error) {
	address, err := ma.NewMultiaddr(text)
	if err != nil {
		return nil, err
	}
	if !manet.IsIPLoopback(address) {
		return nil, fmt.Errorf("%s is not a loopback address: this peer only dials and listens on loopback", text)
	}
	return address, nil
}

// loopbackOnly is a connection gater that lets this peer dial and accept loopback addresses only.
type loopbackOnly struct{}

func (loopbackOnly) InterceptPeerDial(peer.ID) bool { return true }
func (loopbackOnly) InterceptAddrDial(_ peer.ID, address ma.Multiaddr) bool {
	return manet.IsIPLoopback(address)
}
func (loopbackOnly) InterceptAccept(c network.ConnMultiaddrs) bool {
	return manet.IsIPLoopback(c.RemoteMultiaddr())
}
func (loopbackOnly) InterceptSecured(network.Direction, peer.ID, network.ConnMultiaddrs) bool {
	return true
}
func (loopbackOnly) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

func emit(value any) {
	line, err := json.Marshal(value)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(line))
}

func fail(err error) {
	emit(map[string]string{"stage": "start", "error": err.Error()})
	os.Exit(2)
}
