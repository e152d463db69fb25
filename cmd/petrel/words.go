package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// parseWords parses args with fs, letting flags come before, between or
// after the words (the subcommand and its operands); "--" ends the flags.
// On -h it prints help and fs's defaults. When parsing ends the command it
// returns ok false and the exit status: 0 after -h, 2 on a bad flag.
func parseWords(fs *flag.FlagSet, args []string, name, help string, stderr io.Writer) (words []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(stderr)
				fmt.Fprint(stderr, help)
				fs.PrintDefaults()
				return nil, 0, false
			}
			fmt.Fprintf(stderr, "%s: %v; run '%s -h' for help\n", name, err, name)
			return nil, 2, false
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(words, rest...), 0, true
		}
		if len(rest) == 0 {
			return words, 0, true
		}
		words = append(words, rest[0])
		args = rest[1:]
	}
}
