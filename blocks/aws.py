"""EKS cluster credentials: an access key pair, or a role to assume."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from prefect.blocks.core import Block
from pydantic import Field, HttpUrl, SecretStr, model_validator

from hubploy.cloud import ClusterAccess, aws


class AwsClusterCredentials(Block):
    """Access to an EKS cluster: `aws eks update-kubeconfig` with private AWS config files, and a
    kubeconfig whose `aws eks get-token` exec entry refreshes tokens (and role sessions) itself.

    Without a key pair, the role is assumed from the worker's own AWS credentials.

    Example:
        ```python
        import os
        from blocks.aws import AwsClusterCredentials
        AwsClusterCredentials(role_arn="arn:aws:iam::123456789012:role/deployer", cluster="hubs",
                              region="us-west-2").save("hubs")
        credentials = AwsClusterCredentials.load("BLOCK_NAME")
        with credentials.cluster_access("hub-staging", base_env=dict(os.environ)) as access:
            print(access.kubeconfig)  # run helm/kubectl with env=access.env
        ```
    """

    _block_type_name = "AWS Cluster Credentials"
    _description = "An EKS cluster and the access key pair or IAM role hubploy deploys to it with."
    _documentation_url = HttpUrl("https://docs.aws.amazon.com/eks/latest/userguide/create-kubeconfig.html")

    aws_access_key_id: str | None = Field(None, description="Access key id (with the secret access key).")
    aws_secret_access_key: SecretStr | None = Field(None, description="Secret access key.")
    role_arn: str | None = Field(None, description="IAM role to assume for the cluster.")
    role_session_name: str = Field(aws.DEFAULT_SESSION_NAME, description="Session name of the assumed role.")
    cluster: str = Field(description="EKS cluster name.")
    region: str = Field(description="AWS region of the cluster.")

    @model_validator(mode="after")
    def _one_source(self) -> AwsClusterCredentials:
        if bool(self.aws_access_key_id) != bool(self.aws_secret_access_key):
            raise ValueError("set both aws_access_key_id and aws_secret_access_key, or neither")
        if not self.aws_access_key_id and not self.role_arn:
            raise ValueError("set an access key pair, a role_arn, or both")
        return self

    @contextlib.contextmanager
    def cluster_access(self, namespace: str, *, base_env: Mapping[str, str]) -> Iterator[ClusterAccess]:
        """A temp kubeconfig and child env for one run (``namespace`` is unused: EKS has one context)."""
        secret = self.aws_secret_access_key.get_secret_value() if self.aws_secret_access_key else None
        with aws.cluster_access(
            cluster=self.cluster,
            region=self.region,
            access_key_id=self.aws_access_key_id,
            secret_access_key=secret,
            role_arn=self.role_arn,
            session_name=self.role_session_name,
            base_env=base_env,
        ) as access:
            yield access
