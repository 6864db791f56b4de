"""nicsim.host"""
