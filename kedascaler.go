package main

import (
	"fmt"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/openwebui-exporter/openwebui_exporter/keda"
)

// kedaFlags configure the KEDA external scaler (gRPC), off by default.
type kedaFlags struct {
	listenAddress *string
	pushInterval  *time.Duration
	tls           keda.TLSFiles
}

func addKEDAFlags(app *kingpin.Application) *kedaFlags {
	f := &kedaFlags{
		listenAddress: app.Flag("keda.listen-address", "Address (e.g. :9443) of the gRPC server for KEDA's external and external-push triggers; off when empty.").Default("").String(),
		pushInterval:  app.Flag("keda.push-interval", "How often Open WebUI is asked while KEDA holds an external-push stream open (at least 200ms).").Default("1s").Duration(),
	}
	app.Flag("keda.tls.cert-file", "PEM certificate of the KEDA gRPC server (with --keda.tls.key-file); plaintext when unset. Re-read for every new connection.").PlaceHolder("FILE").StringVar(&f.tls.CertFile)
	app.Flag("keda.tls.key-file", "PEM private key of the KEDA gRPC server.").PlaceHolder("FILE").StringVar(&f.tls.KeyFile)
	app.Flag("keda.tls.client-ca-file", "PEM CA: require and verify client certificates signed by it (mutual TLS; KEDA's tlsClientCert).").PlaceHolder("FILE").StringVar(&f.tls.ClientCAFile)
	return f
}

// listenKEDA starts listening for KEDA, or returns nil when it is off.
func listenKEDA(f *kedaFlags, source keda.Demand, logger log.Logger) (*keda.GRPCServer, error) {
	tlsSet := f.tls != keda.TLSFiles{}
	if *f.listenAddress == "" {
		if tlsSet {
			return nil, fmt.Errorf("--keda.tls.* flags need --keda.listen-address")
		}
		return nil, nil
	}
	if *f.pushInterval < keda.MinPushInterval {
		return nil, fmt.Errorf("--keda.push-interval must be at least %s, got %s", keda.MinPushInterval, *f.pushInterval)
	}
	tlsConfig, err := keda.ServerTLSConfig(f.tls)
	if err != nil {
		return nil, fmt.Errorf("--keda.tls.cert-file, --keda.tls.key-file, --keda.tls.client-ca-file: %w", err)
	}
	server, err := keda.ListenGRPC(*f.listenAddress, keda.NewScaler(source, *f.pushInterval, logger), tlsConfig)
	if err != nil {
		return nil, fmt.Errorf("--keda.listen-address: %w", err)
	}
	level.Info(logger).Log("msg", "serving KEDA's external scaler (gRPC)", "address", server.Addr(),
		"tls", tlsConfig != nil, "client_certificates", f.tls.ClientCAFile != "", "push_interval", *f.pushInterval)
	return server, nil
}
