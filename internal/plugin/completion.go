package plugin

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/careplane/careplane/api/v1alpha1"
)

// completeEnvs completes the ENV argument of a command with the names of
// the HealthEnvironments in the cluster (cobra's ValidArgsFunction). It
// completes the first argument only, and nothing at all when the cluster
// cannot be read: a shell completion must not print errors.
func (o *options) completeEnvs(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if o.client == nil {
		if err := o.connect(); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
	}
	var list v1alpha1.HealthEnvironmentList
	if err := o.client.List(cmd.Context(), &list); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	return matchingNames(list.Items, toComplete), cobra.ShellCompDirectiveNoFileComp
}

// matchingNames are the names of envs that start with prefix, sorted.
func matchingNames(envs []v1alpha1.HealthEnvironment, prefix string) []string {
	var names []string
	for _, e := range envs {
		if strings.HasPrefix(e.Name, prefix) {
			names = append(names, e.Name)
		}
	}
	slices.Sort(names)
	return names
}

// completeRevisions completes restore's --revision with the known-good
// revisions of the environment named first.
func (o *options) completeRevisions(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) == 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if o.client == nil {
		if err := o.connect(); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
	}
	env, err := o.getEnv(cmd.Context(), args[0])
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	revs, err := o.revisions(cmd.Context(), env)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	SortRevisions(revs.Items)
	var names []string
	for _, r := range revs.Items {
		if strings.HasPrefix(r.Name, toComplete) {
			names = append(names, r.Name)
		}
	}
	return names, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveKeepOrder
}
