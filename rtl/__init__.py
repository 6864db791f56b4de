"""nicsim.rtl"""
