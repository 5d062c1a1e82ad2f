package main

import "strings"

// fileList is a repeatable file flag (--ipsets A --ipsets B).
type fileList []string

func (f *fileList) String() string { return strings.Join(*f, ",") }

// Set appends one file.
func (f *fileList) Set(s string) error {
	*f = append(*f, s)
	return nil
}

const ipsetsHelp = "`ipset save` file with the sets that -m set --match-set names (repeatable; one file may hold every set). " +
	"Reloaded with the rules (SIGHUP, statewire rules load)"
