"""nicsim.sim"""
