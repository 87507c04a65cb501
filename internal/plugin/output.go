package plugin

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"
)

// outputFlags are -o and its companions (--template, --show-managed-fields)
// on a read command, from cli-runtime as kubectl get has them: json, yaml,
// name, jsonpath and go-template print the API objects themselves, as the
// API server holds them (without managedFields, as kubectl does), so that
// a script decodes them with the API types.
type outputFlags struct {
	print *genericclioptions.PrintFlags
}

func addOutputFlags(cmd *cobra.Command) *outputFlags {
	f := &outputFlags{print: newPrintFlags()}
	f.print.AddFlags(cmd)
	// Human output is the default, so that -o is optional.
	cmd.Flags().Lookup("output").Usage = "Output format: json, yaml, name, jsonpath=..., go-template=... (the API objects); the default is a human-readable table"
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return f.print.AllowedFormats(), cobra.ShellCompDirectiveNoFileComp
	})
	return f
}

func newPrintFlags() *genericclioptions.PrintFlags {
	return genericclioptions.NewPrintFlags("").WithTypeSetter(scheme)
}

// human says whether to print the human-readable form (no -o).
func (f *outputFlags) human() bool {
	return f.print.OutputFormat == nil || *f.print.OutputFormat == ""
}

// printer is the printer -o asks for; an unknown format is a usage error,
// found before anything is read.
func (f *outputFlags) printer() (printers.ResourcePrinter, error) {
	if f.human() {
		return nil, nil
	}
	p, err := f.print.ToPrinter()
	if err != nil {
		return nil, usageError{err}
	}
	return p, nil
}

// printObj prints obj with p. A list's items get their apiVersion and kind,
// as kubectl get -o json prints them: the type setter sets the list's own
// only.
func printObj(p printers.ResourcePrinter, obj runtime.Object, out io.Writer) error {
	if meta.IsListType(obj) {
		items, err := meta.ExtractList(obj)
		if err != nil {
			return err
		}
		// ExtractList returns pointers into a typed list's items.
		for _, item := range items {
			if err := setKind(item); err != nil {
				return err
			}
		}
	}
	if err := p.PrintObj(obj, out); err != nil {
		return fmt.Errorf("printing: %w", err)
	}
	return nil
}

// setKind sets obj's apiVersion and kind from the scheme.
func setKind(obj runtime.Object) error {
	gvks, _, err := scheme.ObjectKinds(obj)
	if err != nil {
		return err
	}
	obj.GetObjectKind().SetGroupVersionKind(gvks[0])
	return nil
}
