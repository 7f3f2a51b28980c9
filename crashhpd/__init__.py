# SPDX-License-Identifier: GPL-2.0-only
"""crashhpd: keeps the kdump elfcorehdr in step with CPU and memory hotplug."""

__version__ = "0.1.0"
