package manifest

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a manifest.
type Problem struct {
	// File names the manifest ("manifests/pipedrive.json").
	File string `json:"file"`
	// Path is the JSON path of the offending value, e.g.
	// "platforms.pipedrive.auth.type"; empty for the whole file.
	Path string `json:"path"`
	// Message says what is wrong, for a person.
	Message string `json:"message"`
}

// String renders "file: path: message".
func (p Problem) String() string {
	switch {
	case p.Path == "" && p.File == "":
		return p.Message
	case p.Path == "":
		return p.File + ": " + p.Message
	case p.File == "":
		return p.Path + ": " + p.Message
	}
	return p.File + ": " + p.Path + ": " + p.Message
}

// Error is returned by the loaders when any manifest is invalid; it holds
// every problem found.
type Error struct {
	Problems []Problem
}

// Error implements error: one problem per line.
func (e *Error) Error() string {
	var b strings.Builder
	if len(e.Problems) == 1 {
		b.WriteString("invalid manifest: ")
		b.WriteString(e.Problems[0].String())
		return b.String()
	}
	fmt.Fprintf(&b, "invalid manifests (%d problems):", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Problems returns the problems carried by err (an *Error in its chain), or
// nil.
func Problems(err error) []Problem {
	var e *Error
	if errors.As(err, &e) {
		return e.Problems
	}
	return nil
}

// jsonPath builds a path from its segments: identifiers joined by dots,
// array indexes in brackets, other keys quoted ("platforms[\"a.b\"]").
func jsonPath(segments ...string) string {
	var b strings.Builder
	for _, s := range segments {
		switch {
		case isIndex(s):
			b.WriteString("[" + s + "]")
		case identifier.MatchString(s):
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s)
		default:
			b.WriteString("[" + strconv.Quote(s) + "]")
		}
	}
	return b.String()
}

var identifier = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$-]*$`)

func isIndex(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// problems collects the problems of one file.
type problems struct {
	file string
	list []Problem
}

func (ps *problems) add(path, format string, args ...any) {
	ps.list = append(ps.list, Problem{File: ps.file, Path: path, Message: fmt.Sprintf(format, args...)})
}
