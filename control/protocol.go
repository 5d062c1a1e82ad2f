package control

import (
	"encoding/json"
	"errors"
)

// Operations of a Request.
const (
	OpList       = "list"        // conntrack -L (Format, Filter)
	OpCount      = "count"       // conntrack -C (Filter)
	OpStats      = "stats"       // conntrack -S
	OpExpectList = "expect-list" // conntrack --expect-list
	OpDelete     = "delete"      // conntrack -D (Filter; an empty filter deletes nothing)
	OpFlush      = "flush"       // conntrack -F
	OpEvents     = "events"      // conntrack -E (Filter)
	OpSysctlGet  = "sysctl-get"  // Name ("" for all)
	OpSysctlSet  = "sysctl-set"  // Name, Value
	OpRulesLoad  = "rules-load"  // Path (and Path6)
	OpRulesShow  = "rules-show"  // the running rule set, iptables-save style
	OpSync       = "sync"        // statewire sync: Name is one of the Sync* (sync.go)
)

// Formats of OpList and OpEvents.
const (
	FormatConntrack = "conntrack" // `conntrack -L` (the default)
	FormatProc      = "proc"      // /proc/net/nf_conntrack
	FormatJSON      = "json"      // one JSON object per line (ctlist.EntryJSON)
)

// Request is what a client sends, as one JSON line.
type Request struct {
	Op     string `json:"op"`
	Format string `json:"format,omitempty"`
	Filter Filter `json:"filter,omitzero"`
	Name   string `json:"name,omitempty"`
	Value  string `json:"value,omitempty"`
	Path   string `json:"path,omitempty"`
	Path6  string `json:"path6,omitempty"`
}

// Response is one line of the server's answer.
type Response struct {
	Line  string `json:"line,omitempty"`  // one line of output, without newline
	Done  bool   `json:"done,omitempty"`  // the last line of a successful answer
	Count int    `json:"count,omitempty"` // with Done: entries listed, counted, deleted
	Error string `json:"error,omitempty"` // the last line of a failed answer
}

// ErrServer wraps the errors the server reports.
var ErrServer = errors.New("statewire")

func encodeLine(r any) []byte {
	b, _ := json.Marshal(r) // our types always marshal
	return append(b, '\n')
}
