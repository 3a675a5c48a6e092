package io.kvmarket.registry;

class InProcessRegistryTest extends RegistryContractTest {

    @Override
    protected OfferRegistry create() {
        return new InProcessRegistry(clock::get);
    }
}
