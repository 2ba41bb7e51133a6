"""pxed answering the boot network itself (``boot_dhcp = "proxy"``):
Debian's dnsmasq as a child service, in proxyDHCP mode beside the lab's own
DHCP server and as the TFTP server of Debian's iPXE binaries.

- interface.py: the boot interface's IPv4 address (the chain URL's host).
- dnsmasqconf.py: the dnsmasq configuration and its list of known MACs,
  rendered from the settings.
- prepare.py: what is checked and written before pxed serves (the
  directory under data_dir, the TFTP root, dnsmasq's own syntax check).
- service.py: the running dnsmasq: started after the web port, its log
  lines into pxed's log, restarted with a backoff when it dies, told of
  new and removed machines, stopped first.
- standalone.py: the equivalent configuration for a lab that keeps its own
  DHCP server (``pxed-admin boot-network-config``)."""
