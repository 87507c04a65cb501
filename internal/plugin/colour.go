package plugin

import (
	"io"
	"os"

	"golang.org/x/term"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// colour is an ANSI foreground colour. Every one is two digits, so that a
// painted word is always the same number of bytes longer than the word:
// tabwriter counts bytes, and a column painted in every row stays aligned.
type colour string

const (
	plain  colour = "39" // the terminal's default foreground
	red    colour = "31"
	green  colour = "32"
	yellow colour = "33"
)

// palette paints words of human output when on. It is on only when
// standard output is a terminal and NO_COLOR is unset (https://no-color.org);
// -o json|yaml never goes through it.
type palette struct{ on bool }

// paletteFor is the palette for out: on when out is a terminal, NO_COLOR
// is unset or empty, and TERM is not "dumb".
func paletteFor(out io.Writer, getenv func(string) string) palette {
	f, ok := out.(*os.File)
	return palette{on: ok && colourWanted(term.IsTerminal(int(f.Fd())), getenv)}
}

// colourWanted decides colour from whether the output is a terminal and
// the environment.
func colourWanted(terminal bool, getenv func(string) string) bool {
	return terminal && getenv("NO_COLOR") == "" && getenv("TERM") != "dumb"
}

// paint returns s in colour c. When the palette is on, every word is
// painted, plain ones and the column's header too, so that all cells of a
// column grow alike.
func (p palette) paint(c colour, s string) string {
	if !p.on {
		return s
	}
	return "\x1b[" + string(c) + "m" + s + "\x1b[0m"
}

// conditionColour is the colour of a condition's status word: green when
// it is as a responder wants it, red when not, yellow while it is unknown
// or in passing (serving from the standby, restoring). expectFenced says
// the environment should be fenced: then Fenced and IsolationVerified must
// be True, and otherwise they say nothing alarming (IsolationVerified is
// Unknown on an environment with nothing to verify).
func conditionColour(typ string, status metav1.ConditionStatus, expectFenced bool) colour {
	isTrue := status == metav1.ConditionTrue
	switch {
	case typ == v1alpha1.ConditionFenced || typ == v1alpha1.ConditionIsolationVerified:
		if expectFenced {
			return pick(isTrue, green, red)
		}
		return plain
	case status == metav1.ConditionUnknown:
		return yellow
	}
	switch typ {
	case v1alpha1.ConditionReady:
		return pick(isTrue, green, red)
	case v1alpha1.ConditionDegraded:
		return pick(isTrue, red, plain)
	case v1alpha1.ConditionServingFromStandby, v1alpha1.ConditionRestoring:
		return pick(isTrue, yellow, plain)
	}
	return plain
}

func pick(cond bool, a, b colour) colour {
	if cond {
		return a
	}
	return b
}
