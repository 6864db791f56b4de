"""nicsim.gpu: OpenCL packet-processing kernels and the GPU as a PCIe device.

* :mod:`.platform`: choosing the OpenCL device (``NICSIM_CL``) and building kernels once.
* :mod:`.batch`: frames packed for the kernels.
* :mod:`.lpm`, :mod:`.packet_ops`, :mod:`.ac`, :mod:`.aes`: IPv4/IPv6 LPM, RSS and checksum
  verification, Aho-Corasick signature matching, AES-128-CTR; tables built with numpy.
* :mod:`.device`: the GPU in the simulation (copies over its PCIe link, launches, kernel time).
* :mod:`.bench`: kernel throughput against numpy, and the device model's calibration.

See ``docs/gpu.md``.
"""
