package control

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Flags are the operator-interface flags of `statewire run`.
type Flags struct {
	Name        string // instance name: the default socket is /run/statewire/NAME.sock
	Socket      string // control socket path ("" for the default, "none" for no socket)
	MetricsAddr string // Prometheus listen address ("" off)
	LogFormat   string // text or json
	LogLevel    string // debug, info, warn, error
}

// AddFlags registers --name, --control-socket, --metrics-addr, --log-format
// and --log-level on fs.
func AddFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.Name, "name", "", "instance name; the control socket is /run/statewire/NAME.sock (default PORTA-PORTB)")
	fs.StringVar(&f.Socket, "control-socket", "", `control socket for statewire conntrack/sysctl/rules (default /run/statewire/NAME.sock; "none": no socket)`)
	fs.StringVar(&f.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9477); off by default")
	fs.StringVar(&f.LogFormat, "log-format", "text", "log format: text or json (log/slog, on stderr)")
	fs.StringVar(&f.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	return f
}

// Logger returns the logger the flags select, writing to w, with each
// message limited to 10 records per 10 s.
func (f *Flags) Logger(w io.Writer) (*slog.Logger, error) {
	return NewLogger(w, f.LogFormat, f.LogLevel, 10, 10*time.Second)
}

// InstanceName returns the instance name the flags select for a bridge of
// ports: --name, or "PORTA-PORTB".
func (f *Flags) InstanceName(ports [2]string) string {
	if f.Name != "" {
		return f.Name
	}
	return ports[0] + "-" + ports[1]
}

// Path returns the control socket path the flags select for a bridge of
// ports ("" for none). The default instance name is "PORTA-PORTB": unique
// per pair of ports, so several bridges on one machine do not collide.
func (f *Flags) Path(ports [2]string) string {
	switch f.Socket {
	case "none":
		return ""
	case "":
		return DefaultPath(f.InstanceName(ports))
	}
	return f.Socket
}

// Start serves the control socket and, with --metrics-addr, the metrics
// endpoint, each from its own goroutine, for the running bridge b. stop
// closes both (call it before stopping the datapath: -L and -D need the
// workers).
func (f *Flags) Start(b Backend, opt Options) (stop func(), err error) {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	var closers []func()
	stop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	if p := f.Path(opt.Ports); p != "" {
		s, err := Listen(p, b, opt)
		if err != nil {
			return nil, fmt.Errorf("control socket: %w", err)
		}
		go func() {
			if err := s.Serve(); err != nil {
				opt.Logger.Error("control socket", "err", err)
			}
		}()
		closers = append(closers, func() { s.Close() })
		opt.Logger.Info("control socket", "path", p)
	}
	if f.MetricsAddr != "" {
		m, err := ServeMetrics(f.MetricsAddr, b, opt.Ports)
		if err != nil {
			stop()
			return nil, fmt.Errorf("--metrics-addr: %w", err)
		}
		closers = append(closers, func() { m.Close() })
		opt.Logger.Info("metrics", "url", "http://"+m.Addr()+"/metrics")
	}
	return stop, nil
}
