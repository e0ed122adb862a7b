"""The sandbox agent: a kubelet, kube-proxy, cluster DNS, load balancer and storage provisioner for one
node, in Python (see __main__)."""
