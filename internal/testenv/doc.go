// Package testenv provides test helpers for regfs: skips for tests that need
// FUSE or a registry binary, and registries for tests with a counting proxy
// in front so tests can assert request budgets at the registry side.
//
// # Skips
//
// Every Require* helper, and [Registry] when it cannot find its binary, skips
// the test when its requirement is missing, unless the environment variable
// REGFS_REQUIRE_FUSE=1 is set: then it fails the test instead, so CI cannot
// pass by skipping.
//
// # Registries
//
// [Registry] runs Debian's docker-registry (distribution 2.8) with storage in
// a temporary directory; [InProcessRegistry] serves go-containerregistry's
// in-memory registry. Both put a [Counter] in front: [Server.Host] is the
// counted address, [Server.DirectHost] the uncounted one (for pushing
// fixtures without disturbing counts). [RegistryWithOptions] runs
// docker-registry with options, such as a pull-through cache of another
// registry; [StartRegistry] starts the process alone, with no testing.T, for
// programs such as the benchmark.
package testenv
