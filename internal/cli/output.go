package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// OutputFormat is the value of a command's -o flag.
type OutputFormat string

// Output formats understood by printObject.
const (
	OutputText OutputFormat = ""
	OutputJSON OutputFormat = "json"
	OutputYAML OutputFormat = "yaml"
)

// bindOutput adds -o/--output to cmd, accepting the given formats besides
// json and yaml.
func bindOutput(cmd *cobra.Command, out *OutputFormat) {
	cmd.Flags().StringVarP((*string)(out), "output", "o", "", "output format: json or yaml")
}

func (o OutputFormat) validate() error {
	switch o {
	case OutputText, OutputJSON, OutputYAML:
		return nil
	}
	return fmt.Errorf("unknown output format %q: use json or yaml", string(o))
}

// printObject writes v to w as JSON or YAML; it is an error to call it with
// the text format.
func printObject(w io.Writer, format OutputFormat, v any) error {
	switch format {
	case OutputJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case OutputYAML:
		data, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	return fmt.Errorf("printObject: no structured format chosen")
}
