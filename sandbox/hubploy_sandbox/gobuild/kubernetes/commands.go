//go:build tools

// Package commands names the Kubernetes commands the sandbox builds, so that `go mod tidy` keeps
// their dependencies in go.mod and go.sum. The build runs `go build` on these import paths.
package commands

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
