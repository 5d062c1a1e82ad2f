package main

import (
	"errors"
	"io"
)

func runCmd(args []string, stdout, stderr io.Writer) error  { return errors.New("not yet") }
func demoCmd(args []string, stdout, stderr io.Writer) error { return errors.New("not yet") }
