package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
)

// Do sends req to the server at path and calls line for each output line
// until the server ends the answer. It returns Response.Count, or the
// server's error wrapped in ErrServer. For an event stream it returns when
// ctx ends (with ctx.Err()).
func Do(ctx context.Context, path string, req Request, line func(string)) (int, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return 0, fmt.Errorf("no statewire control socket at %s (is `statewire run` running, are you root?): %w", path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	b, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	if _, err := c.Write(append(b, '\n')); err != nil {
		return 0, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	for {
		raw, err := br.ReadBytes('\n')
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return 0, errors.New("control socket: the server closed the connection without an answer")
			}
			return 0, err
		}
		var r Response
		if err := json.Unmarshal(raw, &r); err != nil {
			return 0, fmt.Errorf("control socket: bad response: %v", err)
		}
		switch {
		case r.Error != "":
			return 0, fmt.Errorf("%w: %s", ErrServer, r.Error)
		case r.Done:
			return r.Count, nil
		}
		line(r.Line)
	}
}
