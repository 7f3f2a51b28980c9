# SPDX-License-Identifier: GPL-2.0-only
"""Finding the crash kernel, initrd and command line the way kdump-config and kdumpctl do, on real files.

The command lines expected are written out, or built by kdump-config's own sed expression, never from
crashhpd's constants.
"""

import subprocess
from pathlib import Path

import pytest
from faketree import write

from crashhpd.backends import kdump_discovery as kd
from crashhpd.errors import BackendError, ParseError

DEBIAN_CMDLINE = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0b4e ro quiet crashkernel=512M-:192M hugepages=16\n"
FEDORA_RELEASE = "6.8.5-301.fc40.x86_64"
FEDORA_CMDLINE = ("BOOT_IMAGE=(hd0,gpt2)/vmlinuz-6.8.5-301.fc40.x86_64 root=UUID=9a1c ro rootflags=subvol=root "
                  "rd.luks.uuid=luks-77 rhgb quiet crashkernel=1G-4G:192M,4G-64G:256M panic_on_warn=1 "
                  'dyndbg="file drivers/usb/* +p"\n')
CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
apicid\t\t: 2
initial apicid\t: 2

processor\t: 1
vendor_id\t: GenuineIntel
apicid\t\t: 0
initial apicid\t: 0
"""

# kdump-tools 1.8.1's kdump-config, kdump_load(): its edit of /proc/cmdline when KDUMP_CMDLINE is unset (its second
# expression only escapes a quote for the shell's eval, which kexec never sees), and its default KDUMP_CMDLINE_APPEND
KDUMP_CONFIG_SED = r"s/(^| )(crashkernel|hugepages|hugepagesz|abm)=[^ ]*//g"
KDUMP_TOOLS_APPEND = "reset_devices systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll usbcore.nousb"


def as_kdump_config_builds(proc_cmdline: str) -> str:
    """kdump-config's --command-line for this /proc/cmdline: sed's edit, a blank, the default append.

    crashhpd also drops BOOT_IMAGE= (a bootloader's note, no kernel parameter) and sed's doubled blanks.
    """
    edited = subprocess.run(["sed", "-re", KDUMP_CONFIG_SED], input=proc_cmdline, capture_output=True, text=True,
                            check=True).stdout
    return " ".join([p for p in edited.split() if not p.startswith("BOOT_IMAGE=")] + [KDUMP_TOOLS_APPEND])


def test_the_kdump_config_reference_edits_only_what_kdump_config_removes():
    """A negative control for the reference: it keeps what only looks like a removed parameter."""
    assert as_kdump_config_builds("a crashkernel=1G,high hugepagesz=2M hugepages=8 abm=1 crashkernel_x=1 b\n") == \
        "a crashkernel_x=1 b " + KDUMP_TOOLS_APPEND


def files(root: Path, named: dict[str, str]) -> Path:
    for rel, text in named.items():
        write(root, rel, text)
    return root


# --- parsing ------------------------------------------------------------------------------


def test_assignments_follow_shell_quoting_and_skip_everything_else():
    text = (
        "# kdump-tools configuration\n"
        "USE_KDUMP=1\n"
        "export KDUMP_KERNEL=/var/lib/kdump/vmlinuz   # the link kdump-config maintains\n"
        'KDUMP_CMDLINE_APPEND="nr_cpus=1 irqpoll  usbcore.nousb"\n'
        "KDUMP_COREDIR='/var/crash'\n"
        "#KDUMP_INITRD=/commented/out\n"
        "[ -r /etc/other ] && echo hi\n"
    )
    assert kd.parse_assignments(text, "/etc/default/kdump-tools") == {
        "USE_KDUMP": "1",
        "KDUMP_KERNEL": "/var/lib/kdump/vmlinuz",
        "KDUMP_CMDLINE_APPEND": "nr_cpus=1 irqpoll  usbcore.nousb",
        "KDUMP_COREDIR": "/var/crash",
    }


@pytest.mark.parametrize("line", ['KDUMP_KERNEL="/boot/vmlinuz-$(uname -r)"', "KDUMP_KERNEL=/boot/vmlinuz-`uname -r`",
                                  'KDUMP_CMDLINE_APPEND="$KDUMP_CMDLINE_APPEND nousb"'])
def test_values_that_need_the_shell_are_refused_with_file_and_line(line):
    with pytest.raises(ParseError) as err:
        kd.parse_assignments(f"USE_KDUMP=1\n{line}\n", "/etc/default/kdump-tools")
    assert err.value.lineno == 2
    assert str(err.value).startswith("/etc/default/kdump-tools:2: shell expansion is not supported")


def test_an_unclosed_quote_names_its_line():
    with pytest.raises(ParseError) as err:
        kd.parse_assignments('USE_KDUMP=1\nKDUMP_CMDLINE="irqpoll\n', "/etc/default/kdump-tools")
    assert err.value.lineno == 2


def test_kernel_parameters_split_like_the_kernel_and_quoted_values_survive():
    line = 'root=/dev/vda1 dyndbg="file x.c +p" crashkernel=512M,high quiet'
    assert kd.split_params(line) == ["root=/dev/vda1", 'dyndbg="file x.c +p"', "crashkernel=512M,high", "quiet"]
    assert kd.edit_cmdline(line, {"crashkernel"}, "irqpoll", None, "  ") == \
        'root=/dev/vda1 dyndbg="file x.c +p" quiet irqpoll'


def test_only_the_exact_parameter_name_is_removed():
    assert kd.edit_cmdline("crashkernel=1G crashkernel_x=1 xcrashkernel=2 crashkernel", kd.ALWAYS_REMOVED) == \
        "crashkernel_x=1 xcrashkernel=2"


@pytest.mark.parametrize(("text", "version"), [
    ("kexec-tools 2.0.25\n", (2, 0, 25)),
    ("kexec-tools 2.0.28.git\n", (2, 0, 28)),
    ("kexec-tools 2.0.32", (2, 0, 32)),
    ("kexec: unrecognized option '--version'\n", None),
])
def test_kexec_version(text, version):
    assert kd.parse_kexec_version(text) == version


def test_boot_cpu_apicid_is_processor_zeros():
    assert kd.boot_cpu_apicid(CPUINFO) == 2
    assert kd.boot_cpu_apicid("processor\t: 0\nvendor_id\t: AuthenticAMD\n") is None


# --- Debian: kdump-config -----------------------------------------------------------------------


def debian_tree(root: Path, defaults: str | None = "USE_KDUMP=1\nKDUMP_KERNEL=/var/lib/kdump/vmlinuz\n"
                "KDUMP_INITRD=/var/lib/kdump/initrd.img\nKDUMP_COREDIR=\"/var/crash\"\n", initrd: bool = True) -> Path:
    files(root, {"proc/cmdline": DEBIAN_CMDLINE, "var/lib/kdump/vmlinuz": "kernel"})
    if initrd:
        write(root, "var/lib/kdump/initrd.img", "initrd")
    if defaults is not None:
        write(root, "etc/default/kdump-tools", defaults)
    return root


def test_debian_defaults_file(tmp_path):
    root = debian_tree(tmp_path)
    found = kd.discover(str(root))
    assert found.kernel == str(root / "var/lib/kdump/vmlinuz")
    assert found.initrd == str(root / "var/lib/kdump/initrd.img")
    # kdump-config drops crashkernel, hugepages, hugepagesz, abm; crashhpd also drops BOOT_IMAGE
    assert found.cmdline == ("root=UUID=0b4e ro quiet reset_devices systemd.unit=kdump-tools-dump.service nr_cpus=1 "
                             "irqpoll usbcore.nousb") == as_kdump_config_builds(DEBIAN_CMDLINE)
    assert found.source == "/etc/default/kdump-tools"


def test_debian_cmdline_override_is_used_as_written_plus_append_plus_crashhpds_append(tmp_path):
    root = debian_tree(tmp_path, 'KDUMP_CMDLINE="root=/dev/sda2 crashkernel=1G"\nKDUMP_CMDLINE_APPEND="irqpoll"\n')
    assert kd.discover(str(root), append="console=ttyS0").cmdline == \
        "root=/dev/sda2 crashkernel=1G irqpoll console=ttyS0"


def test_debian_without_an_initrd_loads_without_one(tmp_path):
    assert kd.discover(str(debian_tree(tmp_path, initrd=False))).initrd is None


def test_debian_missing_kernel_names_the_file_and_where_it_came_from(tmp_path):
    root = debian_tree(tmp_path, "KDUMP_KERNEL=/boot/vmlinuz-kdump\n")
    with pytest.raises(BackendError) as err:
        kd.discover(str(root))
    assert str(err.value) == f"crash kernel {root}/boot/vmlinuz-kdump (from /etc/default/kdump-tools) does not exist"
    assert err.value.retry_after is None


def test_no_distribution_file_means_kdump_tools_defaults(tmp_path):
    root = debian_tree(tmp_path, defaults=None)
    found = kd.discover(str(root))
    assert found.kernel == str(root / "var/lib/kdump/vmlinuz")
    assert found.source.startswith("kdump-tools defaults")


def test_a_broken_settings_file_is_one_backend_error(tmp_path):
    root = debian_tree(tmp_path, 'KDUMP_KERNEL="/var/lib/kdump/vmlinuz\n')
    with pytest.raises(BackendError, match=r"cannot read the kdump settings: .*/etc/default/kdump-tools:1: "):
        kd.discover(str(root))


# --- Fedora: kdumpctl ---------------------------------------------------------------------------


def fedora_tree(root: Path, sysconfig: str, initrd_dir: str | None = "boot") -> Path:
    files(root, {"proc/cmdline": FEDORA_CMDLINE, "proc/cpuinfo": CPUINFO, "etc/sysconfig/kdump": sysconfig,
                 "proc/sys/kernel/osrelease": FEDORA_RELEASE + "\n"})
    write(root, f"boot/vmlinuz-{FEDORA_RELEASE}", "kernel")
    if initrd_dir:
        write(root, f"{initrd_dir}/initramfs-{FEDORA_RELEASE}kdump.img", "initrd")
    return root


FEDORA_SYSCONFIG = (
    'KDUMP_KERNELVER=""\n'
    'KDUMP_COMMANDLINE=""\n'
    'KDUMP_COMMANDLINE_REMOVE="hugepages hugepagesz slub_debug quiet log_buf_len swiotlb rhgb"\n'
    'KDUMP_COMMANDLINE_APPEND="irqpoll nr_cpus=1 reset_devices cgroup_disable=memory"\n'
    'KEXEC_ARGS="-s"\n'
)


def test_fedora_sysconfig(tmp_path):
    root = fedora_tree(tmp_path, FEDORA_SYSCONFIG)
    found = kd.discover(str(root))
    assert found.kernel == str(root / f"boot/vmlinuz-{FEDORA_RELEASE}")
    assert found.initrd == str(root / f"boot/initramfs-{FEDORA_RELEASE}kdump.img")
    # kdumpctl always drops crashkernel, panic_on_warn, root and the rd.* the kdump initramfs replaces
    assert found.cmdline == ('ro rootflags=subvol=root dyndbg="file drivers/usb/* +p" '
                             "irqpoll nr_cpus=1 reset_devices cgroup_disable=memory disable_cpu_apicid=2")


def test_fedora_kernelver_and_the_var_lib_kdump_initramfs(tmp_path):
    root = fedora_tree(tmp_path, FEDORA_SYSCONFIG.replace('KDUMP_KERNELVER=""', "KDUMP_KERNELVER=6.9.0-test"),
                       initrd_dir=None)
    write(root, "boot/vmlinuz-6.9.0-test", "kernel")
    write(root, "var/lib/kdump/initramfs-6.9.0-testkdump.img", "initrd")
    found = kd.discover(str(root))
    assert found.kernel == str(root / "boot/vmlinuz-6.9.0-test")
    assert found.initrd == str(root / "var/lib/kdump/initramfs-6.9.0-testkdump.img")


def test_fedora_without_its_kdump_initramfs_says_which_file(tmp_path):
    root = fedora_tree(tmp_path, FEDORA_SYSCONFIG, initrd_dir=None)
    with pytest.raises(BackendError, match=rf"initrd {root}/boot/initramfs-{FEDORA_RELEASE}kdump.img "
                                           r"\(from /etc/sysconfig/kdump\) does not exist"):
        kd.discover(str(root))


def test_fedora_commandline_override_still_goes_through_the_removals(tmp_path):
    sysconfig = FEDORA_SYSCONFIG.replace('KDUMP_COMMANDLINE=""',
                                         'KDUMP_COMMANDLINE="root=/dev/vda3 quiet console=ttyS0"')
    found = kd.discover(str(fedora_tree(tmp_path, sysconfig)))
    assert found.cmdline.startswith("console=ttyS0 irqpoll")


# --- crashhpd's own config ----------------------------------------------------------------------


def test_config_paths_win_and_distribution_files_are_not_needed(tmp_path):
    kernel, initrd = write(tmp_path, "k/vmlinuz", "k"), write(tmp_path, "k/initrd", "i")
    root = tmp_path / "root"
    write(root, "etc/default/kdump-tools", 'KDUMP_KERNEL="broken\n')  # never read
    found = kd.discover(str(root), str(kernel), str(initrd), "root=/dev/vda1 crashkernel=256M", "nr_cpus=1")
    assert (found.kernel, found.initrd, found.cmdline, found.source) == \
        (str(kernel), str(initrd), "root=/dev/vda1 crashkernel=256M nr_cpus=1", "crashhpd config")


def test_config_kernel_with_the_distributions_initrd_and_cmdline(tmp_path):
    root = debian_tree(tmp_path / "root")
    kernel = write(tmp_path, "k/vmlinuz", "k")
    found = kd.discover(str(root), kernel=str(kernel))
    assert found.kernel == str(kernel)
    assert found.initrd == str(root / "var/lib/kdump/initrd.img")


def test_a_missing_configured_kernel_is_named_with_its_key(tmp_path):
    with pytest.raises(BackendError, match=r"crash kernel /nonexistent/vmlinuz \(from kexec.kernel\) does not exist"):
        kd.discover(str(tmp_path), "/nonexistent/vmlinuz", "/nonexistent/initrd", "quiet")


def test_this_machines_real_proc_cmdline(tmp_path):
    """The real /proc/cmdline through the kdump-tools defaults (this host has no kdump-tools settings)."""
    if Path("/etc/default/kdump-tools").exists() or Path("/etc/sysconfig/kdump").exists():
        pytest.skip("this host has its own kdump settings; the expectation below assumes none")
    kernel, initrd = write(tmp_path, "vmlinuz", "k"), write(tmp_path, "initrd", "i")
    found = kd.discover("/", str(kernel), str(initrd))
    assert found.cmdline == as_kdump_config_builds(Path("/proc/cmdline").read_text())
