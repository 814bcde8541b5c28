"""dedupd.mounts: the one mountinfo parser (store and watcher), on real mountinfo text."""

from dedupd.mounts import NETWORK_FILESYSTEMS, filesystem_type

#: /proc/self/mountinfo lines as a Debian 12 host prints them with a systemd automount of a NAS share on /mnt/nas
#: (fstab's x-systemd.automount) after the first access: the autofs trigger, then the NFS mount on top of it; and an
#: autofs indirect map on /net with one share mounted below it. Mount options after the first few are cut to fit.
AUTOMOUNT_SAMPLE = """\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
24 28 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=8140456k,nr_inodes=2035114,mode=755
28 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
45 28 259:1 / /boot/efi rw,relatime shared:27 - vfat /dev/nvme0n1p1 rw,fmask=0077,dmask=0077,codepage=437
51 28 0:47 / /mnt/nas rw,relatime shared:29 - autofs systemd-1 rw,fd=61,pgrp=1,timeout=0,minproto=5,direct
52 28 0:48 / /net rw,relatime shared:30 - autofs /etc/auto.net rw,fd=7,pgrp=1420,timeout=300,indirect
688 51 0:62 / /mnt/nas rw,relatime shared:351 - nfs4 192.0.2.10:/volume1/photos rw,vers=4.1,rsize=131072,hard
702 52 0:63 / /net/backup/photos rw,nosuid,nodev,relatime shared:358 - cifs //backup/photos rw,vers=3.1.1
"""


def test_an_automounted_share_is_the_network_filesystem_mounted_on_the_autofs_point() -> None:
    assert filesystem_type("/mnt/nas", AUTOMOUNT_SAMPLE) == "nfs4"
    assert filesystem_type("/mnt/nas/2024/IMG_0001.JPG", AUTOMOUNT_SAMPLE) == "nfs4"
    assert filesystem_type("/net/backup/photos/a.jpg", AUTOMOUNT_SAMPLE) == "cifs"
    assert {"nfs4", "cifs"} <= NETWORK_FILESYSTEMS


def test_an_autofs_point_not_mounted_yet_and_local_paths() -> None:
    assert filesystem_type("/net/other", AUTOMOUNT_SAMPLE) == "autofs"
    assert filesystem_type("/boot/efi/EFI", AUTOMOUNT_SAMPLE) == "vfat"
    assert filesystem_type("/mnt/nasty", AUTOMOUNT_SAMPLE) == "ext4"
    assert filesystem_type("/home/u/Pictures", AUTOMOUNT_SAMPLE) == "ext4"
    assert "autofs" not in NETWORK_FILESYSTEMS and "ext4" not in NETWORK_FILESYSTEMS


def test_this_process_mountinfo_is_read_when_no_text_is_given() -> None:
    assert filesystem_type("/proc/self") == "proc"
    assert filesystem_type("/") != ""
